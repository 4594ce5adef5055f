-- Move a live hold's expiry: keeps a long stream's reservation from being swept.
local res_key = KEYS[1]
local exp_key = KEYS[2]

local reservation_id = ARGV[1]
local now_ms = tonumber(ARGV[2])
local expires_ms = ARGV[3]
local retention_ms = tonumber(ARGV[4])

local r = redis.call('HMGET', res_key, 'state', 'exp')
local state = r[1]
if not state then return reply({'NOTFOUND'}) end
if state ~= 'held' or tonumber(r[2]) <= now_ms then
  if state == 'held' then state = 'expired' end
  return reply({'NOTHELD', state})
end
redis.call('HSET', res_key, 'exp', expires_ms)
redis.call('PEXPIRE', res_key, tonumber(expires_ms) - now_ms + retention_ms)
redis.call('ZADD', exp_key, expires_ms, reservation_id)
return reply({'OK', expires_ms})
