-- Hold `amount` against every budget that covers the request, all or nothing.
local cfg_key = KEYS[1]
local res_key = KEYS[2]
local exp_key = KEYS[3]
local ledger_key = KEYS[4]
local log_key = KEYS[5]  -- the org's config change log (lib.lua config_check)
-- KEYS[6..] budget state hashes, in the order of the (uid, pstart) pairs in ARGV

local cfg_version = ARGV[1]
local reservation_id = ARGV[2]
local fingerprint = ARGV[3]
local amount = ARGV[4]
local critical = ARGV[5] == '1'
local now_ms = ARGV[6]
local expires_ms = ARGV[7]
local retention_ms = tonumber(ARGV[8])
local price_version = ARGV[9]  -- price ref (budget_service/hotpath/price_refs.py); '0' for an amount
local subject = ARGV[10]  -- the subject's selector pairs as JSON, for the ledger
local epoch = ARGV[11]  -- the org's data-set epoch the service expects (lib.lua lost_epoch)
-- Events the org's outbox may hold (not yet written to PostgreSQL) before new holds wait.
local outbox_limit = tonumber(ARGV[12])
local n = tonumber(ARGV[13])
-- ARGV[12 + 2i], ARGV[13 + 2i]: uid and current period start of budget i (1-based)

local existing = redis.call('HMGET', res_key, 'fp', 'rres')
if existing[1] then
  if existing[1] ~= fingerprint then return reply({'MISMATCH'}) end
  return '["DUP",' .. existing[2] .. ']'
end
local check = config_check(cfg_key, cfg_version, epoch, log_key)
if check then return reply({check}) end
local backlog = redis.call('XLEN', ledger_key)
if backlog >= outbox_limit then return reply({'BACKLOG', backlog}) end

local want = big(amount)
local budgets = {}
local uids = {}
local refused = {}
local balances = {}
for i = 1, n do
  local uid = ARGV[12 + 2 * i]
  local b = read_budget(KEYS[5 + i], ARGV[13 + 2 * i])
  if not b then return reply({'STALE'}) end
  if not fits_int64(b.reserved, amount) then return overflow_reply(b, 'reserved') end
  local used = big_add(big(b.spent), big(b.reserved))
  local need = big_add(used, want)
  local over = big_gt(need, big(b.limit))
  if b.mode == 'hard' then
    local cap = big(b.limit)
    if critical then cap = big_add(cap, big(b.od)) end
    -- A budget with no room left refuses whatever the amount, a zero-amount hold included.
    if big_gt(need, cap) or not big_gt(cap, used) then refused[#refused + 1] = balance(b, true) end
  end
  budgets[i] = {b, over and b.mode ~= 'hard'}
  uids[i] = uid
end
if #refused > 0 then return reply({'REFUSED', refused}) end

local effects = {}
for i = 1, n do
  local b = budgets[i][1]
  write_reset(b)
  incr(b, 'reserved', amount)
  balances[i] = balance(b, budgets[i][2])
  effects[i] = uids[i] .. ':' .. b.pstart .. ':0:' .. amount
end
local encoded = cjson.encode({amount, expires_ms, balances})
redis.call('HSET', res_key, 'fp', fingerprint, 'state', 'held', 'amount', amount,
  'uids', table.concat(uids, ','), 'exp', expires_ms, 'created', now_ms, 'pv', price_version,
  'subj', subject, 'rres', encoded)
-- Relative TTL: Redis's clock need not agree with the service's.
redis.call('PEXPIRE', res_key, tonumber(expires_ms) - tonumber(now_ms) + retention_ms)
redis.call('ZADD', exp_key, expires_ms, reservation_id)
outbox(ledger_key, {'t', 'reserve', 'rid', reservation_id, 'c', now_ms, 'ts', now_ms,
  'amt', amount, 'exp', expires_ms, 'pv', price_version, 'fp', fingerprint, 'subj', subject},
  effects)
return ok_reply(encoded)
