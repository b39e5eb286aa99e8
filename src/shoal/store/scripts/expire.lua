-- The master's retention sweep: remove finished tasks that ended more than the retention ago and those
-- whose own result_ttl has passed, with everything kept about them (hash, attempts, late results, index
-- entries), at most ARGV[4] per call so that one call holds the store for a few milliseconds only.
-- The tasks past the retention are found in the finished states' indexes, oldest task first (by sequence
-- number, so by creation): a task ended at or after it was created, so the walk of an index stops at the
-- first task created after the cutoff, and tasks created before it but ended since are passed over. Such
-- tasks at an index's head hold up the sweep of that index by at most the retention (they are due by then).
-- ARGV: prefix, epoch (fencing; '' = none), retention in seconds ('0' = keep for ever, only result_ttl
-- expires), most removed per call.
-- Returns {'ok', removed, more ('1' when more are due now)} or {'stale', current epoch}.
local cur = stale(ARGV[2])
if cur then return {'stale', cur} end
local retention, most = tonumber(ARGV[3]), tonumber(ARGV[4])
local t = now()

local due, seen, found_in = {}, {}, {}
local function take(id, state)
  if not seen[id] then
    seen[id] = true
    due[#due + 1] = id
    found_in[id] = state
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'expiry', '-inf', t, 'LIMIT', 0, most)) do take(id) end
local looked = 0  -- tasks looked at and passed over, bounded like those removed
if retention > 0 then
  local cutoff = t - retention
  for _, state in ipairs({'SUCCEED', 'RUNTIME_ERROR', 'KILLED'}) do
    local index, offset = P .. 'index:' .. state, 0
    while #due < most and looked < most do
      local ids = redis.call('ZRANGE', index, offset, offset + 99)
      if #ids == 0 then break end
      offset = offset + #ids
      local stop = false
      for _, id in ipairs(ids) do
        local f = redis.call('HMGET', P .. 'task:' .. id, 'created_at', 'finished_at')
        local created, ended = tonumber(f[1]), tonumber(f[2])
        if created and created > cutoff then stop = true break end
        if not ended or ended <= cutoff then take(id, state) else looked = looked + 1 end
        if #due >= most or looked >= most then stop = true break end
      end
      if stop then break end
    end
  end
end

local by_state, removed, names = {}, {}, {}
for _, id in ipairs(due) do
  local tkey = P .. 'task:' .. id
  local f = redis.call('HMGET', tkey, 'state', 'name', 'seq', 'type', 'wf')
  local state = f[1]
  if not state or TERMINAL[state] then  -- a terminal state is final: anything else is no task to remove
    if f[5] then redis.call('SREM', P .. 'wf:' .. f[5], id) end
    removed[#removed + 1] = id
    local index = state or found_in[id]  -- an entry left without its task goes too
    if index then
      by_state[index] = by_state[index] or {}
      table.insert(by_state[index], id)
    end
    if state then publish(id, 'DELETED', '', t, f[4] or '') end
    if f[2] and f[3] then names[#names + 1] = name_entry(f[2], f[3], id) end
    redis.call('DEL', tkey, P .. 'attempts:' .. id, P .. 'result:' .. id, P .. 'dupes:' .. id,
      P .. 'children:' .. id)
  end
end
if #due > 0 then
  for state, ids in pairs(by_state) do variadic('ZREM', P .. 'index:' .. state, ids) end
  variadic('ZREM', P .. 'expiry', due)
  if #names > 0 then variadic('ZREM', P .. 'names', names) end
  if redis.call('EXISTS', P .. 'index:all') == 1 then  -- older versions' indexes, if a node of one wrote them
    variadic('ZREM', P .. 'index:all', due)
    variadic('ZREM', P .. 'ended', due)
  end
end
-- As many as it may take were due: more may be (call again at once).
return {'ok', #removed, #due >= most and '1' or '0'}
