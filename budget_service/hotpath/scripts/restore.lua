-- Rebuild an org's state in Redis from the PostgreSQL ledger (budget_service/ledger/recovery.py).
-- The org is fenced while this runs: its epoch is gone from the config hash, so every money
-- script of a budgeted org answers LOST and nothing else changes its counters. Reservation
-- records may come in chunks (`finish` = 0); the last call (`finish` = 1) writes the config and
-- the counters and puts the epoch back, which lifts the fence.
local cfg_key = KEYS[1]
local exp_key = KEYS[2]
-- KEYS[3 ..]: budget state hashes (n), then the records of open holds (m), then the records of
-- reservations Redis holds that the ledger says ended (k)

local epoch = ARGV[1]
local retention_ms = tonumber(ARGV[2])
local now_ms = tonumber(ARGV[3])
local finish = ARGV[4] == '1'
local n = tonumber(ARGV[5])
local m = tonumber(ARGV[6])
local k = tonumber(ARGV[7])
-- per budget, 10 values: uid, config json, id, limit, overdraft, mode, version, spent, reserved,
--   period start
-- per open hold, 9: id, amount, uids, expires (extended ones included), created, price ref,
--   fingerprint, subject, stored answer
-- per ended reservation, 10: id, created, state, charged or given back, hold, late, commit
--   fingerprint, commit periods, refunded, stored answer
local BUDGET_ARGS, HOLD_ARGS, ENDED_ARGS = 10, 9, 10

local a = 8
local budgets, holds, ended = 0, 0, 0
if finish then
  local keep = {}
  for i = 0, n - 1 do
    local base = a + BUDGET_ARGS * i
    local key = KEYS[3 + i]
    redis.call('DEL', key)
    redis.call('HSET', key, 'id', ARGV[base + 2], 'limit', ARGV[base + 3], 'od', ARGV[base + 4],
      'mode', ARGV[base + 5], 'ver', ARGV[base + 6], 'spent', ARGV[base + 7],
      'reserved', ARGV[base + 8], 'pstart', ARGV[base + 9])
    redis.call('HSET', cfg_key, ARGV[base], ARGV[base + 1])
    keep[ARGV[base]] = true
    budgets = budgets + 1
  end
  for _, field in ipairs(redis.call('HKEYS', cfg_key)) do
    if string.sub(field, 1, 1) ~= '_' and not keep[field] then
      redis.call('HDEL', cfg_key, field)
    end
  end
end
a = a + BUDGET_ARGS * n

for j = 0, m - 1 do
  local base = a + HOLD_ARGS * j
  local key = KEYS[3 + n + j]
  local expires = ARGV[base + 3]
  if redis.call('HGET', key, 'state') == 'held' then
    redis.call('HSET', key, 'exp', expires)
  else
    -- missing, or ended in Redis by an event the ledger does not have: the ledger wins, as it
    -- does for the counters
    redis.call('DEL', key)
    redis.call('HSET', key, 'fp', ARGV[base + 6], 'state', 'held', 'amount', ARGV[base + 1],
      'uids', ARGV[base + 2], 'exp', expires, 'created', ARGV[base + 4],
      'pv', ARGV[base + 5], 'subj', ARGV[base + 7], 'rres', ARGV[base + 8])
  end
  local ttl = tonumber(expires) - now_ms + retention_ms
  if ttl < retention_ms then ttl = retention_ms end
  redis.call('PEXPIRE', key, ttl)
  redis.call('ZADD', exp_key, expires, ARGV[base])
  holds = holds + 1
end
a = a + HOLD_ARGS * m

for j = 0, k - 1 do
  local base = a + ENDED_ARGS * j
  local key = KEYS[3 + n + m + j]
  local r = redis.call('HMGET', key, 'state', 'created')
  if r[1] == 'held' and r[2] == ARGV[base + 1] then
    local state = ARGV[base + 2]
    if state == 'committed' then
      redis.call('HSET', key, 'state', 'committed', 'charged', ARGV[base + 3],
        'refunded', ARGV[base + 8], 'cfp', ARGV[base + 6], 'cps', ARGV[base + 7],
        'cres', ARGV[base + 9])
    elseif state == 'released' then
      redis.call('HSET', key, 'state', 'released', 'released', ARGV[base + 3])
    else
      redis.call('HSET', key, 'state', 'expired', 'expired_at', now_ms)
    end
    redis.call('PEXPIRE', key, retention_ms)
    redis.call('ZREM', exp_key, ARGV[base])
    ended = ended + 1
  end
end

if finish then
  -- a version no process has cached: the next call of every replica reloads the config
  if redis.call('HEXISTS', cfg_key, '_v') == 1 then
    redis.call('HINCRBY', cfg_key, '_v', 1)
  else
    redis.call('HSET', cfg_key, '_v', now_ms)
  end
  redis.call('HSET', cfg_key, '_e', epoch)
end
return reply({'OK', budgets, holds, ended})
