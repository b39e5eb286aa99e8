-- A node starts tasks placed on it: INQUEUE -> RUNNING, opening a new attempt of each, in one step.
-- ARGV: prefix, node, how many of the first and of the latest attempts the list keeps (past that the oldest
-- attempt in between is dropped and counted in attempts_dropped, so a task lost over and over cannot grow its
-- list without end), task count, then per task: id, resume ('1': the caller retries a start whose reply it
-- lost, so a task already RUNNING on this node is its own and is returned as it is).
-- Returns per task {'ok', attempt, field1, value1, ...} (the task's hash after the change, so the worker
-- needs no second read) or {'gone', state} if the task is no longer INQUEUE on this node (killed, deleted,
-- or re-placed elsewhere).
local node, first, last = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local t = now()
local out = {}
for k = 0, tonumber(ARGV[5]) - 1 do
  local id, resume = ARGV[6 + 2 * k], ARGV[7 + 2 * k]
  local tkey = P .. 'task:' .. id
  local flat = redis.call('HGETALL', tkey)
  local task = {}
  for j = 1, #flat, 2 do task[flat[j]] = j + 1 end  -- field -> position of its value in flat
  local function field(name) return task[name] and flat[task[name]] end
  local state = field('state')
  if resume == '1' and state == 'RUNNING' and field('node') == node then
    out[#out + 1] = {'ok', tonumber(field('attempts')), unpack(flat)}
  elseif state ~= 'INQUEUE' or field('node') ~= node then
    out[#out + 1] = {'gone', state or ''}
  else
    local attempt = tonumber(field('attempts')) + 1
    redis.call('HSET', tkey, 'state', 'RUNNING', 'attempts', attempt, 'started_at', fmt(t))
    move_later(id, field('seq'), 'INQUEUE', 'RUNNING')
    local akey = P .. 'attempts:' .. id
    local held = redis.call('RPUSH', akey, cjson.encode({number = attempt, node = node, started_at = t}))
    if held > first + last then
      redis.call('LSET', akey, first, '')
      redis.call('LREM', akey, 1, '')
      redis.call('HINCRBY', tkey, 'attempts_dropped', 1)
    end
    publish(id, 'RUNNING', node, t)
    flat[task['state']] = 'RUNNING'
    flat[task['attempts']] = tostring(attempt)
    if task['started_at'] then
      flat[task['started_at']] = fmt(t)
    else
      flat[#flat + 1] = 'started_at'
      flat[#flat + 1] = fmt(t)
    end
    out[#out + 1] = {'ok', attempt, unpack(flat)}
  end
end
return out
