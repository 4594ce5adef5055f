-- Which of an org's budgets Redis holds at an older version than PostgreSQL, or not at all
-- (reads only; the reconciler then pushes just those through sync_org).
local cfg_key = KEYS[1]
-- KEYS[2 .. 1 + n]: state hashes of the budgets, in ARGV order

-- ARGV[2i - 1], ARGV[2i]: uid and PostgreSQL's version of budget i (1-based)
local outdated = {}
for i = 1, #KEYS - 1 do
  local uid = ARGV[2 * i - 1]
  local current = redis.call('HGET', KEYS[1 + i], 'ver')
  if not current or tonumber(current) < tonumber(ARGV[2 * i])
      or redis.call('HEXISTS', cfg_key, uid) == 0 then
    outdated[#outdated + 1] = uid
  end
end
return reply({outdated})  -- cjson writes an empty list as {}
