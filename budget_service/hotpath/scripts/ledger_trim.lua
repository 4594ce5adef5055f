-- Trim an org's ledger outbox to what every consumer group has stored, in one atomic step.
-- The floor of a group is its oldest entry read but not acknowledged, or, when none is, the
-- entry after the last one it read. Read with separate commands, another writer could read new
-- entries between the two reads: the trim would then drop entries that writer holds but has not
-- stored, lost if it dies or its insert fails. Inside a script no other command runs.
-- Answers the number of entries trimmed (ledger/writer.py calls it after each acknowledged batch).
local stream_key = KEYS[1]

if redis.call('EXISTS', stream_key) == 0 then return reply(0) end

-- A stream id 'ms-seq' as two numbers (both far below 2^53, exact in a double).
local function parse_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local floor_ms, floor_seq
for _, group in ipairs(redis.call('XINFO', 'GROUPS', stream_key)) do
  local info = {}
  for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
  local pending = redis.call('XPENDING', stream_key, info['name'])
  local ms, seq
  if pending[1] > 0 then
    ms, seq = parse_id(pending[2])
  else
    ms, seq = parse_id(info['last-delivered-id'])
    seq = seq + 1
  end
  if floor_ms == nil or ms < floor_ms or (ms == floor_ms and seq < floor_seq) then
    floor_ms, floor_seq = ms, seq
  end
end
-- No consumer group: nothing is known to be stored, so nothing may go.
if floor_ms == nil then return reply(0) end
return reply(redis.call('XTRIM', stream_key, 'MINID', string.format('%d-%d', floor_ms, floor_seq)))
