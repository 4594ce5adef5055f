-- Read an org's budget counters and the id of its newest ledger event in one atomic step, so
-- reconciliation compares the counters with exactly the events up to that id. Changes nothing.
local ledger_key = KEYS[1]
-- KEYS[2..] budget state hashes

local last_id = '0-0'
if redis.call('EXISTS', ledger_key) == 1 then
  local info = redis.call('XINFO', 'STREAM', ledger_key)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last_id = info[i + 1] end
  end
end
local states = {}
for i = 2, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'spent', 'reserved', 'pstart', 'id', 'ovn')
  states[#states + 1] = {v[1] or '0', v[2] or '0', v[3] or '0', v[4] and 1 or 0, v[5] or '0'}
end
return reply({last_id, states})
