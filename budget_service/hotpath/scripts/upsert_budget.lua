-- Copy one budget's configuration from PostgreSQL into Redis, keeping its counters.
-- An older version than the one Redis holds (a slower concurrent upsert) changes nothing.
-- The org's config must carry the data-set epoch (lib.lua lost_epoch): a config hash without
-- it lost its data, and writing the budget now would restart its spend from zero; only the
-- org's very first budget may write the epoch (`init`). While the org is rebuilt from the
-- ledger (fenced, `_x`) nothing is written (FENCED): the rebuild reads PostgreSQL after fencing,
-- and the config sync applies what it missed once the fence is lifted.
local cfg_key = KEYS[1]
local budget_key = KEYS[2]
local log_key = KEYS[3]

local uid = ARGV[1]
local config_json = ARGV[2]
local budget_id = ARGV[3]
local limit = ARGV[4]
local overdraft = ARGV[5]
local mode = ARGV[6]
local version = tonumber(ARGV[7])
local epoch = ARGV[8]
local init = ARGV[9] == '1'

local head = redis.call('HMGET', cfg_key, '_e', '_x')
if head[2] then return reply({'FENCED'}) end
local found = head[1]
if found ~= epoch and (found or not init) then return reply({'LOST'}) end
local current = redis.call('HGET', budget_key, 'ver')
if current and tonumber(current) >= version then return reply({'OLD'}) end
if not found then redis.call('HSET', cfg_key, '_e', epoch) end
redis.call('HSET', budget_key, 'id', budget_id, 'limit', limit, 'od', overdraft, 'mode', mode,
  'ver', ARGV[7])
redis.call('HSETNX', budget_key, 'spent', '0')
redis.call('HSETNX', budget_key, 'reserved', '0')
redis.call('HSETNX', budget_key, 'pstart', '0')
redis.call('HSET', cfg_key, uid, config_json)
config_changed(cfg_key, log_key, {uid})
return reply({'OK'})
