-- Charge the actual cost of a reservation and give back its hold. A commit after the hold
-- expired is still charged (the call happened) and marked late.
local cfg_key = KEYS[1]
local res_key = KEYS[2]
local exp_key = KEYS[3]
local ledger_key = KEYS[4]
-- KEYS[5..] budget state hashes of the reservation, in the order of its uids

local cfg_version = ARGV[1]
local reservation_id = ARGV[2]
local fingerprint = ARGV[3]
local actual = ARGV[4]
local now_ms = tonumber(ARGV[5])
local retention_ms = ARGV[6]
local uids = ARGV[7]
-- The price version `actual` was priced with: '' for an amount commit, '?' to ask for it.
local price_version = ARGV[8]
local usage = ARGV[9]  -- the tokens as JSON ('' for an amount commit), for the ledger
local latency_ms = ARGV[10]
local epoch = ARGV[11]
local n = tonumber(ARGV[12])
-- ARGV[12 + i]: current period start of budget i

local OVERAGE_KEPT = 5  -- over-limit commits a budget remembers per period (newest first)

-- How much of this charge sits above the limit, given spent after it (decimal strings): a
-- decimal string, or nil when none does.
local function overage_part(spent_after, limit)
  local above = big_sub(big(spent_after), big(limit))
  if not big_gt(above, {0, 0}) then return nil end
  local part = tonumber(actual)
  -- above < actual < 2^53 here, so the pair is an exact number
  if big_gt(big(actual), above) then part = above[1] * 1e9 + above[2] end
  if part <= 0 then return nil end
  return string.format('%d', part)
end

-- A charge that leaves spent above the limit: remember how much of it is above the limit
-- (`part`) and which commit it was, for GetBudgetStatus and metrics. Entries are
-- '<reservation id>|<nanos above the limit>|<flags>' joined by ';' (neither can be in an id);
-- flags: L = late (its hold had expired), H = charged above its hold.
local function note_overage(b, part, flags)
  redis.call('HINCRBY', b.key, 'ovr', part)
  redis.call('HINCRBY', b.key, 'ovn', 1)
  local entries = {reservation_id .. '|' .. part .. '|' .. flags}
  for entry in string.gmatch(redis.call('HGET', b.key, 'ovc') or '', '[^;]+') do
    if #entries >= OVERAGE_KEPT then break end
    entries[#entries + 1] = entry
  end
  redis.call('HSET', b.key, 'ovc', table.concat(entries, ';'))
end

local r = redis.call('HMGET', res_key, 'state', 'amount', 'uids', 'exp', 'cfp', 'cres', 'pv',
  'created', 'subj')
local reserved_pv = r[7] or '0'
local state = r[1]
if not state then
  if lost_epoch(cfg_key, epoch) then return reply({'LOST'}) end
  return reply({'NOTFOUND'})
end
if state == 'committed' then
  if r[5] ~= fingerprint then return reply({'MISMATCH'}) end
  return '["DUP",' .. r[6] .. ']'
end
if state == 'released' then return reply({'RELEASED'}) end
if r[3] ~= uids then return reply({'KEYS', r[3], reserved_pv}) end
-- A usage commit is priced with the reservation's price version: a stale guess changes nothing.
if price_version ~= '' and price_version ~= reserved_pv then return reply({'PV', reserved_pv}) end
local check = config_check(cfg_key, cfg_version, epoch, nil, uids)
if check then return reply({check}) end

local hold = r[2]
local held = state == 'held'
-- Expired from its expiry instant on, as extend, expire and the sweeper see it.
local late = now_ms >= tonumber(r[4])
local flags = (late and 'L' or '') .. (tonumber(actual) > tonumber(hold) and 'H' or '')
local balances = {}
local commit_periods = {}
local uid_list = split_commas(uids)
local unheld = '0'
if held then unheld = '-' .. hold end
-- Decide: every counter this commit moves must stay an int64, or nothing is written.
local budgets = {}
for i = 1, n do
  local b = read_budget(KEYS[4 + i], ARGV[12 + i])
  if b then
    if not fits_int64(b.spent, actual) then return overflow_reply(b, 'spent') end
    if held and not fits_int64(b.reserved, unheld) then return overflow_reply(b, 'reserved') end
    if actual ~= '0' then
      b.overage = overage_part(big_str(big_add(big(b.spent), big(actual))), b.limit)
    end
    if b.overage then
      local ov = {'0', '0'}
      if not b.reset then ov = redis.call('HMGET', b.key, 'ovr', 'ovn') end
      if not fits_int64(ov[1] or '0', b.overage) then return overflow_reply(b, 'ovr') end
      if not fits_int64(ov[2] or '0', '1') then return overflow_reply(b, 'ovn') end
    end
  end
  budgets[i] = b or false
end

local effects = {}
for i = 1, n do
  local b = budgets[i]
  if b then
    write_reset(b)
    incr(b, 'spent', actual)
    if held then unhold_budget(b, hold) end
    if b.overage then note_overage(b, b.overage, flags) end
    balances[#balances + 1] = balance(b, false)
    commit_periods[i] = b.pstart
    effects[#effects + 1] = uid_list[i] .. ':' .. b.pstart .. ':' .. actual .. ':' .. unheld
  else
    commit_periods[i] = '-'
  end
end
local released = '0'
if held then released = hold end
local encoded = cjson.encode({actual, hold, released, late and 1 or 0, balances})
redis.call('HSET', res_key, 'state', 'committed', 'charged', actual, 'refunded', '0',
  'cfp', fingerprint, 'cps', table.concat(commit_periods, ','), 'cres', encoded)
redis.call('PEXPIRE', res_key, retention_ms)
redis.call('ZREM', exp_key, reservation_id)
outbox(ledger_key, {'t', 'commit', 'rid', reservation_id, 'c', r[8] or '0', 'ts', ARGV[5],
  'amt', actual, 'rel', released, 'late', late and '1' or '0', 'pv', reserved_pv,
  'subj', r[9] or '{}', 'usage', usage, 'lat', latency_ms, 'fp', fingerprint}, effects)
return ok_reply(encoded)
