-- Credit back committed spend: at most what is still unrefunded, idempotent by refund id.
-- Spent is credited only in budgets whose period is still the one the charge was made in;
-- a refund of a closed period's charge changes no current counter. A refund does not extend
-- the reservation record's life (it ends `retention` after the commit), and a reservation
-- takes at most `max_refunds` refund ids, so no caller can keep a record growing or alive.
local cfg_key = KEYS[1]
local res_key = KEYS[2]
local ledger_key = KEYS[3]
-- KEYS[4..] budget state hashes of the reservation, in the order of its uids

local cfg_version = ARGV[1]
local refund_id = ARGV[2]
local amount = tonumber(ARGV[3])
local now_ms = ARGV[4]
local max_refunds = tonumber(ARGV[5])
local uids = ARGV[6]
local reservation_id = ARGV[7]
local epoch = ARGV[8]
local n = tonumber(ARGV[9])
-- ARGV[9 + i]: current period start of budget i

local r = redis.call('HMGET', res_key, 'state', 'uids', 'charged', 'refunded', 'cps',
  'rf:' .. refund_id, 'created', 'subj', 'pv', 'rfn')
local state = r[1]
if not state then
  if lost_epoch(cfg_key, epoch) then return reply({'LOST'}) end
  return reply({'NOTFOUND'})
end
if r[6] then
  -- '<asked>:<given>'; '*:<given>' when a rebuild restored it (the ledger keeps what was given)
  local sep = string.find(r[6], ':', 1, true)
  local asked = string.sub(r[6], 1, sep - 1)
  if asked ~= ARGV[3] and asked ~= '*' then return reply({'MISMATCH'}) end
  return reply({'DUP', string.sub(r[6], sep + 1)})
end
if state ~= 'committed' then return reply({'NOTCOMMITTED', state}) end
if r[2] ~= uids then return reply({'KEYS', r[2]}) end
local check = config_check(cfg_key, cfg_version, epoch, nil, uids)
if check then return reply({check}) end
if tonumber(r[10] or '0') >= max_refunds then return reply({'TOOMANY', max_refunds}) end

local left = tonumber(r[3]) - tonumber(r[4])
local give = amount
if give > left then give = left end
local give_s = string.format('%d', give)
if give > 0 then
  local periods = split_commas(r[5])
  local uid_list = split_commas(uids)
  -- Decide: every credited counter must stay an int64, or nothing is written (the refund id
  -- stays unused).
  local credited = {}
  for i = 1, n do
    local b = read_budget(KEYS[3 + i], ARGV[9 + i])
    if b and not b.reset and periods[i] == b.pstart then
      if not fits_int64(b.spent, '-' .. give_s) then return overflow_reply(b, 'spent') end
      credited[#credited + 1] = {b, uid_list[i]}
    end
  end
  local effects = {}
  for _, c in ipairs(credited) do
    local b = c[1]
    redis.call('HINCRBY', b.key, 'spent', '-' .. give_s)
    effects[#effects + 1] = c[2] .. ':' .. b.pstart .. ':-' .. give_s .. ':0'
  end
  redis.call('HINCRBY', res_key, 'refunded', give_s)
  outbox(ledger_key, {'t', 'refund', 'rid', reservation_id, 'c', r[7] or '0', 'ts', now_ms,
    'rfid', refund_id, 'amt', give_s, 'pv', r[9] or '0', 'subj', r[8] or '{}'}, effects)
end
redis.call('HSET', res_key, 'rf:' .. refund_id, ARGV[3] .. ':' .. give_s)
redis.call('HINCRBY', res_key, 'rfn', 1)
return reply({'OK', give_s})
