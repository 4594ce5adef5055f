-- Rebuild an org's state in Redis from the PostgreSQL ledger (budget_service/ledger/recovery.py).
-- The org is fenced while this runs (`_x` in its config hash): every money script of the org
-- answers LOST and nothing else changes its counters. The state comes in calls of a bounded
-- size: the first (`first` = 1) drops the budgets of the config, every call writes its budgets
-- and reservation records, and the last one (`finish` = 1) puts the epoch back, which lifts the
-- fence with everything restored.
local cfg_key = KEYS[1]
local exp_key = KEYS[2]
local ledger_key = KEYS[3]
local log_key = KEYS[4]  -- the config change log (config_changes.lua)
-- KEYS[5 ..]: budget state hashes (n), then the records of open holds (m), then the records of
-- reservations that ended (k)

local epoch = ARGV[1]
local retention_ms = tonumber(ARGV[2])
local now_ms = tonumber(ARGV[3])
local first = ARGV[4] == '1'
local finish = ARGV[5] == '1'
local n = tonumber(ARGV[6])
local m = tonumber(ARGV[7])
local k = tonumber(ARGV[8])
-- The newest stream id the ledger holds for the org ('' for none) and the writers' group: a
-- rewound outbox (a replica that missed writes) is moved past it, so new events never get ids
-- the ledger already has, and reconciliation finds no event Redis never saw.
local ledger_last_id = ARGV[9]
local group = ARGV[10]
-- per budget, 10 values: uid, config json, id, limit, overdraft, mode, version, spent, reserved,
--   period start
-- per open hold, 9: id, amount, uids, expires (extended ones included), created, price ref,
--   fingerprint, subject, stored answer
-- per ended reservation, 18: id, created, state, charged or given back, hold, late, commit
--   fingerprint, commit periods, refunded, stored answer, its refunds ('<refund id>=<given>'
--   joined by ';': a retried refund id answers what it gave, whatever amount it asks); then
--   what its record is made of when Redis has none: uids, expires, price ref, fingerprint,
--   subject, stored reserve answer; and when it ended (ms)
local BUDGET_ARGS, HOLD_ARGS, ENDED_ARGS = 10, 9, 18

local a = 11
local budgets, holds, ended = 0, 0, 0
if first then
  -- budgets the ledger's account does not have go; those it has come back in these calls
  for _, field in ipairs(redis.call('HKEYS', cfg_key)) do
    if string.sub(field, 1, 1) ~= '_' then redis.call('HDEL', cfg_key, field) end
  end
end
for i = 0, n - 1 do
  local base = a + BUDGET_ARGS * i
  local key = KEYS[5 + i]
  redis.call('DEL', key)
  redis.call('HSET', key, 'id', ARGV[base + 2], 'limit', ARGV[base + 3], 'od', ARGV[base + 4],
    'mode', ARGV[base + 5], 'ver', ARGV[base + 6], 'spent', ARGV[base + 7],
    'reserved', ARGV[base + 8], 'pstart', ARGV[base + 9])
  redis.call('HSET', cfg_key, ARGV[base], ARGV[base + 1])
  budgets = budgets + 1
end
a = a + BUDGET_ARGS * n

for j = 0, m - 1 do
  local base = a + HOLD_ARGS * j
  local key = KEYS[5 + n + j]
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

-- An ended reservation's record is put in its final state, with the life it had left: as long
-- as the ending script gave it (retention from the end), so a retried Commit, Release or Refund
-- answers as the first one did. A record of a later reservation with the same id is left alone.
for j = 0, k - 1 do
  local base = a + ENDED_ARGS * j
  local key = KEYS[5 + n + m + j]
  local r = redis.call('HMGET', key, 'state', 'created')
  if r[1] and tonumber(r[2] or '0') < tonumber(ARGV[base + 1]) then
    -- an older reservation with the same id (forgotten and the id used again): the ledger's
    -- is the one retries mean
    redis.call('DEL', key)
    r = {false, false}
  end
  local state = ARGV[base + 2]
  local ended_ms = ARGV[base + 17]
  local ttl = tonumber(ended_ms) + retention_ms - now_ms
  if not r[1] or r[2] == ARGV[base + 1] then
    if ttl <= 0 then
      -- past its retention: its record would be gone by now
      redis.call('DEL', key)
    else
      if not r[1] then
        redis.call('HSET', key, 'fp', ARGV[base + 14], 'amount', ARGV[base + 4],
          'uids', ARGV[base + 11], 'exp', ARGV[base + 12], 'created', ARGV[base + 1],
          'pv', ARGV[base + 13], 'subj', ARGV[base + 15], 'rres', ARGV[base + 16])
      end
      if r[1] ~= state then
        if state == 'committed' then
          redis.call('HSET', key, 'state', 'committed', 'charged', ARGV[base + 3],
            'cfp', ARGV[base + 6], 'cps', ARGV[base + 7], 'cres', ARGV[base + 9])
        elseif state == 'released' then
          redis.call('HSET', key, 'state', 'released', 'released', ARGV[base + 3])
        else
          redis.call('HSET', key, 'state', 'expired', 'expired_at', ended_ms)
        end
        redis.call('PEXPIRE', key, ttl)
      end
      if state == 'committed' then
        -- a committed record behind the ledger's refunds (a promoted replica) catches up too;
        -- the refunds it has keep what they asked
        redis.call('HSET', key, 'refunded', ARGV[base + 8])
        local refunds = 0
        for refund_id, given in string.gmatch(ARGV[base + 10], '([^;=]+)=([^;]+)') do
          redis.call('HSETNX', key, 'rf:' .. refund_id, '*:' .. given)
          refunds = refunds + 1
        end
        if refunds > tonumber(redis.call('HGET', key, 'rfn') or '0') then
          redis.call('HSET', key, 'rfn', refunds)
        end
      end
    end
    redis.call('ZREM', exp_key, ARGV[base])
    if r[1] == 'held' then ended = ended + 1 end
  end
end

if finish then
  -- a version no process has cached, below which the change log says nothing: the next call
  -- of every replica reads the whole config again
  local version
  if redis.call('HEXISTS', cfg_key, '_v') == 1 then
    version = redis.call('HINCRBY', cfg_key, '_v', 1)
  else
    version = now_ms
    redis.call('HSET', cfg_key, '_v', version)
  end
  redis.call('DEL', log_key)
  redis.call('HSET', cfg_key, '_f', version)
  if ledger_last_id ~= '' then
    if redis.call('EXISTS', ledger_key) == 0 then
      redis.call('XGROUP', 'CREATE', ledger_key, group, '0', 'MKSTREAM')
    end
    local last = '0-0'
    local info = redis.call('XINFO', 'STREAM', ledger_key)
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then last = info[i + 1] end
    end
    local lm, ls = string.match(last, '^(%d+)-(%d+)$')
    local wm, ws = string.match(ledger_last_id, '^(%d+)-(%d+)$')
    if tonumber(wm) > tonumber(lm) or (wm == lm and tonumber(ws) > tonumber(ls)) then
      redis.call('XSETID', ledger_key, ledger_last_id)
      -- every entry the stream holds was written before the fence lifted (the rebuild waited
      -- for it): the writers' group has delivered up to the new last id as well
      redis.call('XGROUP', 'SETID', ledger_key, group, ledger_last_id)
    end
  end
  redis.call('HSET', cfg_key, '_e', epoch)
  redis.call('HDEL', cfg_key, '_x')  -- the fence lifts with everything restored
end
return reply({'OK', budgets, holds, ended})
