-- Drop a budget from Redis: its counters and any holds on it go with it. Not while the org is
-- rebuilt from the ledger (fenced, `_x`: FENCED); the config sync drops it after the rebuild.
local cfg_key = KEYS[1]
local budget_key = KEYS[2]
local log_key = KEYS[3]

local uid = ARGV[1]

if redis.call('HEXISTS', cfg_key, '_x') == 1 then return reply({'FENCED'}) end
redis.call('DEL', budget_key)
if redis.call('HDEL', cfg_key, uid) == 1 then config_changed(cfg_key, log_key, {uid}) end
return reply({'OK'})
