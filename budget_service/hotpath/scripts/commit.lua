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
local n = tonumber(ARGV[11])
-- ARGV[11 + i]: current period start of budget i

local r = redis.call('HMGET', res_key, 'state', 'amount', 'uids', 'exp', 'cfp', 'cres', 'pv',
  'created', 'subj')
local reserved_pv = r[7] or '0'
local state = r[1]
if not state then return reply({'NOTFOUND'}) end
if state == 'committed' then
  if r[5] ~= fingerprint then return reply({'MISMATCH'}) end
  return '["DUP",' .. r[6] .. ']'
end
if state == 'released' then return reply({'RELEASED'}) end
if r[3] ~= uids then return reply({'KEYS', r[3], reserved_pv}) end
-- A usage commit is priced with the reservation's price version: a stale guess changes nothing.
if price_version ~= '' and price_version ~= reserved_pv then return reply({'PV', reserved_pv}) end
if stale_config(cfg_key, cfg_version) then return reply({'STALE'}) end

local hold = r[2]
local held = state == 'held'
-- Expired from its expiry instant on, as extend, expire and the sweeper see it.
local late = now_ms >= tonumber(r[4])
local balances = {}
local commit_periods = {}
local uid_list = split_commas(uids)
local unheld = '0'
if held then unheld = '-' .. hold end
local effects = {}
for i = 1, n do
  local b = read_budget(KEYS[4 + i], ARGV[11 + i])
  if b then
    write_reset(b)
    incr(b, 'spent', actual)
    if held then unhold_budget(b, hold) end
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
  'subj', r[9] or '{}', 'usage', usage, 'lat', latency_ms}, effects)
return ok_reply(encoded)
