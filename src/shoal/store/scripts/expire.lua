-- The master's retention sweep: remove, oldest first, finished tasks that ended more than the retention ago
-- and those whose own result_ttl has passed, with everything kept about them (hash, attempts, late results,
-- index entries), at most ARGV[5] per call so that one call holds the store for a few milliseconds only.
-- ARGV: prefix, epoch (fencing; '' = none), retention in seconds ('0' = keep for ever, only result_ttl
-- expires), most removed per call.
-- Returns {'ok', removed, more ('1' when more are due now)} or {'stale', current epoch}.
local cur = stale(ARGV[2])
if cur then return {'stale', cur} end
local retention, most = tonumber(ARGV[3]), tonumber(ARGV[4])
local t = now()

local due, seen = {}, {}
local function take(ids)
  for _, id in ipairs(ids) do
    if not seen[id] then
      seen[id] = true
      due[#due + 1] = id
    end
  end
end
take(redis.call('ZRANGEBYSCORE', P .. 'expiry', '-inf', t, 'LIMIT', 0, most))
if retention > 0 and #due < most then
  take(redis.call('ZRANGEBYSCORE', P .. 'ended', '-inf', t - retention, 'LIMIT', 0, most - #due))
end

local by_state, removed = {}, {}
for _, id in ipairs(due) do
  local tkey = P .. 'task:' .. id
  local state = redis.call('HGET', tkey, 'state')
  if not state or TERMINAL[state] then  -- a terminal state is final: anything else is no task to remove
    removed[#removed + 1] = id
    if state then
      by_state[state] = by_state[state] or {}
      table.insert(by_state[state], id)
      publish(id, 'DELETED', '', t)
    end
    redis.call('DEL', tkey, P .. 'attempts:' .. id, P .. 'result:' .. id, P .. 'dupes:' .. id)
  end
end
if #due > 0 then
  for state, ids in pairs(by_state) do variadic('ZREM', P .. 'index:' .. state, ids) end
  if #removed > 0 then variadic('ZREM', P .. 'index:all', removed) end
  variadic('ZREM', P .. 'ended', due)
  variadic('ZREM', P .. 'expiry', due)
end
-- As many as it may take were due: more may be (call again at once).
return {'ok', #removed, #due >= most and '1' or '0'}
