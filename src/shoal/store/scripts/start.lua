-- A node starts tasks placed on it: INQUEUE -> RUNNING, opening a new attempt of each (its 'run' field; the
-- attempt before, if any, goes to the attempt list), in one step. ARGV: prefix, node, task count, then per task: id, resume ('1': the caller retries a start whose
-- reply it lost, so a task already RUNNING on this node is its own and is returned as it is).
-- Returns per task {'ok', attempt, field1, value1, ...} (the task's hash after the change, so the worker
-- needs no second read) or {'gone', state} if the task is no longer INQUEUE on this node (killed, deleted,
-- or re-placed elsewhere).
-- its events go out on the progress channel unless one ends a task, or a step beside it says not (_lib.lua)
if PROGRESS == nil then PROGRESS = true end
local node = ARGV[2]
local t = now()
local out = {}
for k = 0, tonumber(ARGV[3]) - 1 do
  local id, resume = ARGV[4 + 2 * k], ARGV[5 + 2 * k]
  local tkey = P .. 'task:' .. id
  local flat = redis.call('HGETALL', tkey)
  local at = {}  -- field -> position of its value in flat
  for j = 1, #flat, 2 do at[flat[j]] = j + 1 end
  local state = at.state and flat[at.state]
  local here = at.node and flat[at.node] == node
  if resume == '1' and state == 'RUNNING' and here then
    out[#out + 1] = {'ok', tonumber(flat[at.attempts]), unpack(flat)}
  elseif state ~= 'INQUEUE' or not here then
    out[#out + 1] = {'gone', state or ''}
  else
    local attempt = tonumber(flat[at.attempts]) + 1
    if at.run and flat[at.run] ~= '' then
      local task = {}
      for j = 1, #flat, 2 do task[flat[j]] = flat[j + 1] end
      push_attempt(id, cjson.encode(made_whole(cjson.decode(flat[at.run]), id, task)))
    end
    -- the epoch of the placement that led here, so a history can be checked against the master's terms; its
    -- start time is the task's started_at (made_whole)
    local run = cjson.encode({number = attempt, node = node, epoch = at.epoch and tonumber(flat[at.epoch])})
    local changed = {state = 'RUNNING', attempts = tostring(attempt), started_at = fmt(t), run = run}
    redis.call('HSET', tkey, 'state', changed.state, 'attempts', changed.attempts, 'started_at', changed.started_at,
      'run', run)
    move_later(id, flat[at.seq], 'INQUEUE', 'RUNNING')
    publish(id, 'RUNNING', node, t, at.type and flat[at.type] or '')
    for name, value in pairs(changed) do
      if at[name] then
        flat[at[name]] = value
      else
        flat[#flat + 1] = name
        flat[#flat + 1] = value
      end
    end
    out[#out + 1] = {'ok', attempt, unpack(flat)}
  end
end
return out
