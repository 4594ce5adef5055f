-- Release a hold whose caller vanished: run by the sweeper for reservations past their expiry.
local cfg_key = KEYS[1]
local res_key = KEYS[2]
local exp_key = KEYS[3]
local ledger_key = KEYS[4]
-- KEYS[5..] budget state hashes of the reservation, in the order of its uids

local reservation_id = ARGV[1]
local now_ms = tonumber(ARGV[2])
local retention_ms = ARGV[3]
local uids = ARGV[4]
local epoch = ARGV[5]
local n = tonumber(ARGV[6])

-- A rebuild decides what ended (the ledger may say it was committed): never expire meanwhile.
if lost_epoch(cfg_key, epoch) then return reply({'LOST'}) end
local r = redis.call('HMGET', res_key, 'state', 'amount', 'uids', 'exp', 'created', 'subj')
local state = r[1]
if state ~= 'held' then
  -- Already ended (or its record is gone): only the index entry is left to drop.
  redis.call('ZREM', exp_key, reservation_id)
  return reply({'GONE'})
end
if tonumber(r[4]) > now_ms then return reply({'NOTDUE'}) end
if r[3] ~= uids then return reply({'KEYS', r[3]}) end

local hold = r[2]
local over = unhold_overflow(5, n, hold)
if over then return over end
local effects = unhold_all(5, n, uids, hold)
redis.call('HSET', res_key, 'state', 'expired', 'expired_at', ARGV[2])
redis.call('PEXPIRE', res_key, retention_ms)
redis.call('ZREM', exp_key, reservation_id)
outbox(ledger_key, {'t', 'expire', 'rid', reservation_id, 'c', r[5] or '0', 'ts', ARGV[2],
  'amt', hold, 'subj', r[6] or '{}'}, effects)
return reply({'OK', hold})
