-- What changed in an org's budget configuration since the version a cache holds (reads only).
-- Answers SAME; or CHANGES with the current version, the number of fields of the config hash,
-- the uids changed since, and each one's config JSON (false: deleted); or FULL when the change
-- log does not reach back that far (or looks wrong): then the whole hash is to be read again.
-- Its cost follows the changes (at most CHANGE_LOG_MAX), never the number of budgets.
local cfg_key = KEYS[1]
local log_key = KEYS[2]

local since = ARGV[1]

local head = redis.call('HMGET', cfg_key, '_v', '_f')
local current = head[1] or '0'
if current == since then return reply({'SAME'}) end
local since_n = tonumber(since)
-- A version going back means the hash was re-created (Redis lost it); below the floor, the
-- log was trimmed past what the cache needs.
if tonumber(current) < since_n or since_n < tonumber(head[2] or '0') then
  return reply({'FULL'})
end
local log = redis.call('ZRANGEBYSCORE', log_key, '(' .. since, '+inf', 'WITHSCORES')
-- The newest entry is the current version unless the log itself was lost.
if #log == 0 or log[#log] ~= current then return reply({'FULL'}) end
local uids = {}
local configs = {}
for i = 1, #log / 2 do
  local uid = log[2 * i - 1]
  uids[i] = uid
  configs[i] = redis.call('HGET', cfg_key, uid) or false
end
return reply({'CHANGES', current, redis.call('HLEN', cfg_key), uids, configs})
