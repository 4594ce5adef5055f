-- Void a hold: the call failed and costs nothing.
local cfg_key = KEYS[1]
local res_key = KEYS[2]
local exp_key = KEYS[3]
local ledger_key = KEYS[4]
-- KEYS[5..] budget state hashes of the reservation, in the order of its uids

local reservation_id = ARGV[1]
local now_ms = ARGV[2]
local retention_ms = ARGV[3]
local uids = ARGV[4]
local epoch = ARGV[5]
local n = tonumber(ARGV[6])

if lost_epoch(cfg_key, epoch) then return reply({'LOST'}) end
local r = redis.call('HMGET', res_key, 'state', 'amount', 'uids', 'released', 'created', 'subj')
local state = r[1]
if not state then return reply({'NOTFOUND'}) end
if state == 'committed' then return reply({'COMMITTED'}) end
if state == 'released' then return reply({'DUP', r[4]}) end
if state == 'expired' then return reply({'OK', '0'}) end
if r[3] ~= uids then return reply({'KEYS', r[3]}) end

local hold = r[2]
local over = unhold_overflow(5, n, hold)
if over then return over end
local effects = unhold_all(5, n, uids, hold)
redis.call('HSET', res_key, 'state', 'released', 'released', hold)
redis.call('PEXPIRE', res_key, retention_ms)
redis.call('ZREM', exp_key, reservation_id)
outbox(ledger_key, {'t', 'release', 'rid', reservation_id, 'c', r[5] or '0', 'ts', now_ms,
  'amt', hold, 'subj', r[6] or '{}'}, effects)
return reply({'OK', hold})
