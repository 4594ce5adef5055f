-- Take an idle org out of the registry of orgs the sweeper and the ledger writers visit
-- (`ba:orgs`), so orgs only ever seen in a few Reserves do not keep it growing. Idle: no budget
-- in its config, no held reservation, and an outbox whose every event is written and whose
-- newest is older than `idle_ms` (by Redis's clock, which stamps the stream ids): by then every
-- reservation record has expired too. Its empty outbox and config hash go with it; the engine
-- lists the org again at its next Reserve.
-- (KEYS[1] is global, the others the org's: one Redis, not Redis Cluster.)
local registry_key = KEYS[1]
local cfg_key = KEYS[2]
local exp_key = KEYS[3]
local ledger_key = KEYS[4]
local log_key = KEYS[5]

local org = ARGV[1]
local idle_ms = tonumber(ARGV[2])
local writers_group = ARGV[3]  -- the ledger writers' consumer group

for _, field in ipairs(redis.call('HKEYS', cfg_key)) do
  if field == '_x' then return reply({'BUSY', 'rebuilding'}) end  -- a rebuild under way
  if string.sub(field, 1, 1) ~= '_' then return reply({'BUSY', 'budgets'}) end
end
if redis.call('ZCARD', exp_key) > 0 then return reply({'BUSY', 'holds'}) end
if redis.call('EXISTS', ledger_key) == 1 then
  local last = '0-0'
  local info = redis.call('XINFO', 'STREAM', ledger_key)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = info[i + 1] end
  end
  -- every event delivered to the writers' group and acknowledged (an outbox whose group the
  -- writers never created has not been written at all, unless it is empty)
  local written = redis.call('XLEN', ledger_key) == 0
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', ledger_key)) do
    local fields = {}
    for i = 1, #group, 2 do fields[group[i]] = group[i + 1] end
    if fields['name'] == writers_group then
      written = fields['pending'] == 0 and fields['last-delivered-id'] == last
    end
  end
  if not written then return reply({'BUSY', 'unwritten'}) end
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local last_ms = tonumber(string.match(last, '^(%d+)'))
  if now_ms - last_ms < idle_ms then return reply({'BUSY', 'recent'}) end
  redis.call('DEL', ledger_key)
end
redis.call('DEL', cfg_key, log_key)
redis.call('SREM', registry_key, org)
return reply({'PRUNED'})
