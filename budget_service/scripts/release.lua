-- Void a hold: the call failed and costs nothing.
local res_key = KEYS[1]
local exp_key = KEYS[2]
-- KEYS[3..] budget state hashes of the reservation, in the order of its uids

local reservation_id = ARGV[1]
local retention_ms = ARGV[2]
local uids = ARGV[3]
local n = tonumber(ARGV[4])

local r = redis.call('HMGET', res_key, 'state', 'amount', 'uids', 'released')
local state = r[1]
if not state then return reply({'NOTFOUND'}) end
if state == 'committed' then return reply({'COMMITTED'}) end
if state == 'released' then return reply({'DUP', r[4]}) end
if state == 'expired' then return reply({'OK', '0'}) end
if r[3] ~= uids then return reply({'KEYS', r[3]}) end

local hold = r[2]
for i = 1, n do
  if redis.call('EXISTS', KEYS[2 + i]) == 1 then
    unhold(KEYS[2 + i], hold)
  end
end
redis.call('HSET', res_key, 'state', 'released', 'released', hold)
redis.call('PEXPIRE', res_key, retention_ms)
redis.call('ZREM', exp_key, reservation_id)
return reply({'OK', hold})
