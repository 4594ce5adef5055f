-- Move a live hold's expiry: keeps a long stream's reservation from being swept. The new expiry
-- goes to the ledger too, so a rebuild restores it.
local cfg_key = KEYS[1]
local res_key = KEYS[2]
local exp_key = KEYS[3]
local ledger_key = KEYS[4]

local reservation_id = ARGV[1]
local now_ms = tonumber(ARGV[2])
local expires_ms = ARGV[3]
local retention_ms = tonumber(ARGV[4])
local epoch = ARGV[5]

if lost_epoch(cfg_key, epoch) then return reply({'LOST'}) end
local r = redis.call('HMGET', res_key, 'state', 'exp', 'created', 'subj')
local state = r[1]
if not state then return reply({'NOTFOUND'}) end
if state ~= 'held' or tonumber(r[2]) <= now_ms then
  if state == 'held' then state = 'expired' end
  return reply({'NOTHELD', state})
end
redis.call('HSET', res_key, 'exp', expires_ms)
redis.call('PEXPIRE', res_key, tonumber(expires_ms) - now_ms + retention_ms)
redis.call('ZADD', exp_key, expires_ms, reservation_id)
outbox(ledger_key, {'t', 'extend', 'rid', reservation_id, 'c', r[3] or '0', 'ts', ARGV[2],
  'exp', expires_ms, 'subj', r[4] or '{}'}, {})
return reply({'OK', expires_ms})
