-- Make an org's budget configuration in Redis equal PostgreSQL's (run at start).
-- Counters of budgets that still exist are kept; budgets gone from PostgreSQL are dropped.
local cfg_key = KEYS[1]
-- KEYS[2 .. 1 + n]: state hashes of the budgets to keep, in ARGV order
-- KEYS[2 + n ..]: state hashes of budgets Redis has and PostgreSQL no longer does

local n = tonumber(ARGV[1])
-- ARGV[2 + 7i .. 8 + 7i]: uid, config json, budget id, limit, overdraft, mode, version of
-- budget i; then the uids to drop
local drop_uids_start = 2 + 7 * n

for i = 0, n - 1 do
  local base = 2 + 7 * i
  local key = KEYS[2 + i]
  redis.call('HSET', key, 'id', ARGV[base + 2], 'limit', ARGV[base + 3], 'od', ARGV[base + 4],
    'mode', ARGV[base + 5], 'ver', ARGV[base + 6])
  redis.call('HSETNX', key, 'spent', '0')
  redis.call('HSETNX', key, 'reserved', '0')
  redis.call('HSETNX', key, 'pstart', '0')
  redis.call('HSET', cfg_key, ARGV[base], ARGV[base + 1])
end
for j = drop_uids_start, #ARGV do
  redis.call('HDEL', cfg_key, ARGV[j])
  redis.call('DEL', KEYS[2 + n + (j - drop_uids_start)])
end
redis.call('HINCRBY', cfg_key, '_v', 1)
return reply({'OK'})
