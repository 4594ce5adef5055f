-- Rebuild an org's counters and open holds from the ledger (after Redis lost its data).
-- Run with no traffic on the org: counters are set, not adjusted.
local exp_key = KEYS[1]
-- KEYS[2 .. 1 + n]: budget state hashes; KEYS[2 + n ..]: reservation records of open holds

local n = tonumber(ARGV[1])
local retention_ms = tonumber(ARGV[2])
local now_ms = tonumber(ARGV[3])
-- ARGV[4 + 3i .. 6 + 3i]: spent, reserved, period start of budget i (0-based)
-- then per hold, 9 values: id, amount, uids, expires, created, price ref, fingerprint,
-- subject, stored answer
local restored_budgets = 0
for i = 0, n - 1 do
  local key = KEYS[2 + i]
  if redis.call('EXISTS', key) == 1 then
    local base = 4 + 3 * i
    redis.call('HSET', key, 'spent', ARGV[base], 'reserved', ARGV[base + 1],
      'pstart', ARGV[base + 2])
    restored_budgets = restored_budgets + 1
  end
end
local restored_holds = 0
local first = 4 + 3 * n
local h = 0
for j = first, #ARGV, 9 do
  local key = KEYS[2 + n + h]
  h = h + 1
  if redis.call('EXISTS', key) == 0 then
    local expires = ARGV[j + 3]
    redis.call('HSET', key, 'fp', ARGV[j + 6], 'state', 'held', 'amount', ARGV[j + 1],
      'uids', ARGV[j + 2], 'exp', expires, 'created', ARGV[j + 4], 'pv', ARGV[j + 5],
      'subj', ARGV[j + 7], 'rres', ARGV[j + 8])
    local ttl = tonumber(expires) - now_ms + retention_ms
    if ttl < retention_ms then ttl = retention_ms end
    redis.call('PEXPIRE', key, ttl)
    redis.call('ZADD', exp_key, expires, ARGV[j])
    restored_holds = restored_holds + 1
  end
end
return reply({'OK', restored_budgets, restored_holds})
