-- Make budgets of an org in Redis equal PostgreSQL's (at start, periodically, and in bulk).
-- Counters of budgets that still exist are kept. A budget Redis holds at a newer version than
-- the snapshot (an upsert that landed after PostgreSQL was read) is left as it is. Budgets are
-- only written into a config that carries the data-set epoch (lib.lua lost_epoch): one without
-- it lost its data, and the org is rebuilt from the ledger instead (LOST); `init` writes the
-- epoch (an org's first budgets, or adopting a Redis that predates the epoch). Nothing is written
-- while the org is rebuilt from the ledger (fenced, `_x`): FENCED, and the next sync applies it.
local cfg_key = KEYS[1]
local log_key = KEYS[2]
-- KEYS[3 .. 2 + n]: state hashes of the budgets PostgreSQL has, in ARGV order
-- KEYS[3 + n ..]: state hashes of budgets to drop (in Redis before PostgreSQL was read, and
--                 not in PostgreSQL)

local epoch = ARGV[1]
local init = ARGV[2] == '1'
local n = tonumber(ARGV[3])
-- ARGV[4 + 7i .. 10 + 7i]: uid, config json, budget id, limit, overdraft, mode, version of
-- budget i; then the uids to drop
local drop_uids_start = 4 + 7 * n
local changed = {}

if redis.call('HEXISTS', cfg_key, '_x') == 1 then return reply({'FENCED'}) end
if n > 0 then
  local found = redis.call('HGET', cfg_key, '_e')
  if found ~= epoch then
    if found or not init then return reply({'LOST'}) end
    redis.call('HSET', cfg_key, '_e', epoch)
  end
end

for i = 0, n - 1 do
  local base = 4 + 7 * i
  local key = KEYS[3 + i]
  local current = redis.call('HGET', key, 'ver')
  local known = redis.call('HEXISTS', cfg_key, ARGV[base]) == 1
  if not current or tonumber(current) < tonumber(ARGV[base + 6]) or not known then
    if not current or tonumber(current) <= tonumber(ARGV[base + 6]) then
      redis.call('HSET', key, 'id', ARGV[base + 2], 'limit', ARGV[base + 3],
        'od', ARGV[base + 4], 'mode', ARGV[base + 5], 'ver', ARGV[base + 6])
      redis.call('HSETNX', key, 'spent', '0')
      redis.call('HSETNX', key, 'reserved', '0')
      redis.call('HSETNX', key, 'pstart', '0')
      redis.call('HSET', cfg_key, ARGV[base], ARGV[base + 1])
      changed[#changed + 1] = ARGV[base]
    end
  end
end
for j = drop_uids_start, #ARGV do
  redis.call('HDEL', cfg_key, ARGV[j])
  redis.call('DEL', KEYS[3 + n + (j - drop_uids_start)])
  changed[#changed + 1] = ARGV[j]
end
if #changed > 0 then config_changed(cfg_key, log_key, changed) end
return reply({'OK', #changed > 0 and 1 or 0})
