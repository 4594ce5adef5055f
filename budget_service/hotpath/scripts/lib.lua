-- Shared prelude, prepended to every script by budget_service/hotpath/store.py.
--
-- Budget counters are int64 nano-USD in Redis and can exceed 2^53 (where Lua's doubles stop
-- being exact) or go below zero (a rebuild from a ledger that is ahead of Redis, a refund of a
-- charge the counter never saw). They are kept as decimal strings here and compared as
-- (high, low) pairs, value = high * 1e9 + low with 0 <= low < 1e9: both parts are exact in a
-- double for every int64. All writes to counters go through HINCRBY with string arguments, so
-- Redis does the int64 arithmetic. Amounts of a single reservation are capped by the service
-- (servicekit/validation.py, MAX_AMOUNT_NANOS) far below 2^53, so they may be plain numbers.

-- An int64 decimal string ('-500000000', '9223372036854775807') as a (high, low) pair.
local function big(s)
  s = s or '0'
  local negative = string.sub(s, 1, 1) == '-'
  if negative then s = string.sub(s, 2) end
  local n = #s
  local hi, lo = 0, tonumber(s)
  if n > 9 then
    hi = tonumber(string.sub(s, 1, n - 9))
    lo = tonumber(string.sub(s, n - 8))
  end
  if not negative then return {hi, lo} end
  if lo == 0 then return {-hi, 0} end
  return {-hi - 1, 1e9 - lo}
end

local function big_add(a, b)
  local lo = a[2] + b[2]
  local hi = a[1] + b[1]
  if lo >= 1e9 then
    lo = lo - 1e9
    hi = hi + 1
  end
  return {hi, lo}
end

-- a - b
local function big_sub(a, b)
  local lo = a[2] - b[2]
  local hi = a[1] - b[1]
  if lo < 0 then
    lo = lo + 1e9
    hi = hi - 1
  end
  return {hi, lo}
end

-- The pair as a decimal string (the inverse of big).
local function big_str(a)
  local hi, lo = a[1], a[2]
  local sign = ''
  if hi < 0 then
    sign = '-'
    if lo == 0 then
      hi = -hi
    else
      hi = -hi - 1
      lo = 1e9 - lo
    end
  end
  if hi == 0 then return sign .. string.format('%d', lo) end
  return sign .. string.format('%d%09d', hi, lo)
end

-- true when a > b
local function big_gt(a, b)
  if a[1] ~= b[1] then return a[1] > b[1] end
  return a[2] > b[2]
end

-- The int64 range of a Redis counter, as pairs. HINCRBY past it fails with an error, and an
-- error does not undo the writes the script already made: every script checks each increment
-- it is about to make with `fits_int64` while deciding, before its first write.
local INT64_MAX = big('9223372036854775807')
local INT64_MIN = big('-9223372036854775808')

-- Whether `value` + `delta` (decimal strings) is an int64.
local function fits_int64(value, delta)
  local sum = big_add(big(value), big(delta))
  return not big_gt(sum, INT64_MAX) and not big_gt(INT64_MIN, sum)
end

-- The reply of a call that would carry `counter` of budget `b` outside int64 (nothing changed).
local function overflow_reply(b, counter)
  return cjson.encode({'OVERFLOW', b.id, counter})
end

-- The fields of a budget state hash every script reads, in this order.
local BUDGET_FIELDS = {'id', 'limit', 'od', 'mode', 'spent', 'reserved', 'pstart'}

-- Read a budget's state; nil when the budget was deleted. `pstart_now` is the start of the
-- period the service's clock is in: a newer period means spent starts again from zero
-- (the reset itself is written later, only once the script has decided to write).
local function read_budget(key, pstart_now)
  local v = redis.call('HMGET', key, unpack(BUDGET_FIELDS))
  if not v[1] then return nil end
  local b = {key = key, id = v[1], limit = v[2] or '0', od = v[3] or '0', mode = v[4] or 'hard',
             spent = v[5] or '0', reserved = v[6] or '0', pstart = v[7] or '0', reset = false}
  if pstart_now ~= nil and tonumber(pstart_now) > tonumber(b.pstart) then
    b.spent = '0'
    b.pstart = pstart_now
    b.reset = true
  end
  return b
end

local function write_reset(b)
  if b.reset then
    redis.call('HSET', b.key, 'spent', '0', 'pstart', b.pstart)
    -- the overage record (commit.lua note_overage) is per period too
    redis.call('HDEL', b.key, 'ovr', 'ovn', 'ovc')
    b.reset = false
  end
end

local function balance(b, exceeded)
  return {b.id, b.limit, b.od, b.mode, b.spent, b.reserved, exceeded and 1 or 0}
end

-- HINCRBY a budget counter by `amount` (a decimal string) and keep the new value as an exact
-- string: the reply is a double in Lua, exact below 2^53; above, the counter is read back.
local function incr(b, field, amount)
  local v = redis.call('HINCRBY', b.key, field, amount)
  if v < 9007199254740992 and v > -9007199254740992 then
    b[field] = string.format('%d', v)
  else
    b[field] = redis.call('HGET', b.key, field)
  end
end

-- Take `amount` back out of a budget's holds. Redis refuses '-0' as an integer, so a zero
-- hold is skipped rather than decremented.
local function unhold_budget(b, amount)
  if amount ~= '0' then incr(b, 'reserved', '-' .. amount) end
end

-- The reply of a successful call whose answer was already encoded (and stored) as JSON.
local function ok_reply(encoded)
  return '["OK",' .. encoded .. ']'
end

-- Take `amount` (a decimal string) back out of a budget's holds. Redis refuses '-0' as an
-- integer, so a zero hold is skipped rather than decremented.
local function unhold(key, amount)
  if amount ~= '0' then redis.call('HINCRBY', key, 'reserved', '-' .. amount) end
end

-- An org's data set is marked by the epoch `_e` in its config hash, written with its first
-- budget and by every rebuild (budget_service/config/epoch.py). The service passes the epoch it
-- expects ('' for an org it knows no budgets of); a missing or different one means Redis lost
-- the org's data, and the script changes nothing: the service answers UNAVAILABLE until the org
-- is rebuilt from the ledger, instead of admitting against counters that start from zero.
-- A rebuild under way fences the org (`_x` in the config hash, any org, budgets or not): the
-- same answer, so nothing changes the org while the ledger's account of it is being restored.
local function lost_epoch(cfg_key, epoch)
  local v = redis.call('HMGET', cfg_key, '_e', '_x')
  return v[2] ~= false or (epoch ~= '' and v[1] ~= epoch)
end

-- 'LOST' (see lost_epoch), 'STALE' when the config changed since the service read it (its
-- period starts and budget list may be out of date), or nil.
-- A service that knows no budget of the org expects no epoch, yet the org may have gained its
-- first budget through another replica since, and then lost its config hash: version '0' and no
-- epoch would look exactly like the budgetless org it cached. So a config without an epoch is
-- LOST too when the call itself shows the org has budgets: `held_uids` (a reservation holding
-- budgets) is not empty, or `log_key` (the config change log, which only budget writes create,
-- and which goes with the hash when an idle org is pruned) exists.
local function config_check(cfg_key, cfg_version, epoch, log_key, held_uids)
  local v = redis.call('HMGET', cfg_key, '_v', '_e', '_x')
  if v[3] or (epoch ~= '' and v[2] ~= epoch) then return 'LOST' end
  if not v[2] and ((held_uids and held_uids ~= '')
      or (log_key and redis.call('EXISTS', log_key) == 1)) then
    return 'LOST'
  end
  if (v[1] or '0') ~= cfg_version then return 'STALE' end
  return nil
end

-- Every change of an org's configuration ends here, in the script that makes it: the version
-- goes up by one and each changed budget's uid is logged with it in the org's change log (a
-- sorted set, uid -> version of its last change), so a cache catches up by reading only what
-- changed since its version (config_changes.lua). The log keeps the CHANGE_LOG_MAX most recent
-- uids; `_f` in the config hash is the newest version it no longer fully holds.
local CHANGE_LOG_MAX = 10000
local function config_changed(cfg_key, log_key, uids)
  local version = redis.call('HINCRBY', cfg_key, '_v', 1)
  for i = 1, #uids do redis.call('ZADD', log_key, version, uids[i]) end
  local extra = redis.call('ZCARD', log_key) - CHANGE_LOG_MAX
  if extra > 0 then
    local last = redis.call('ZRANGE', log_key, extra - 1, extra - 1, 'WITHSCORES')
    redis.call('ZREMRANGEBYRANK', log_key, 0, extra - 1)
    redis.call('HSET', cfg_key, '_f', last[2])
  end
end

-- The outbox: append an event to the org's ledger stream in the same atomic step as the change
-- it records, so counters and the ledger cannot disagree (budget_service/ledger/writer.py
-- drains it into PostgreSQL). `effects` lists 'uid:period_start:spent_delta:reserved_delta'.
-- The event is one stream field `e`: its names and values joined by the unit separator (0x1f,
-- which no id can contain and JSON escapes), far cheaper for Redis than one field per value.
local function outbox(stream_key, fields, effects)
  fields[#fields + 1] = 'fx'
  fields[#fields + 1] = table.concat(effects, ',')
  redis.call('XADD', stream_key, '*', 'e', table.concat(fields, '\31'))
end

local function split_commas(s)
  local out = {}
  for part in string.gmatch(s or '', '[^,]+') do out[#out + 1] = part end
  return out
end

local function reply(t)
  return cjson.encode(t)
end

-- The overflow reply (see fits_int64) when giving `hold` back on one of a reservation's budgets
-- (KEYS[first .. first + n - 1]) would carry its `reserved` below the int64 range, else nil.
local function unhold_overflow(first, n, hold)
  for i = 1, n do
    local v = redis.call('HMGET', KEYS[first + i - 1], 'id', 'reserved')
    if v[1] and not fits_int64(v[2] or '0', '-' .. hold) then
      return overflow_reply({id = v[1]}, 'reserved')
    end
  end
  return nil
end

-- Give a hold back on each of a reservation's budgets that still exists (their state hashes
-- are KEYS[first .. first + n - 1], in the order of `uids`); answers the ledger effects.
local function unhold_all(first, n, uids, hold)
  local uid_list = split_commas(uids)
  local effects = {}
  for i = 1, n do
    local key = KEYS[first + i - 1]
    if redis.call('EXISTS', key) == 1 then
      unhold(key, hold)
      if hold ~= '0' then effects[#effects + 1] = uid_list[i] .. ':0:0:-' .. hold end
    end
  end
  return effects
end
