-- A node starts a task placed on it: INQUEUE -> RUNNING, opening a new attempt.
-- ARGV: prefix, id, node, resume ('1': the caller retries a start whose reply it lost, so a task already
-- RUNNING on this node is its own and is returned as it is), then how many of the first and of the latest
-- attempts the list keeps: past that the oldest attempt in between is dropped and counted in
-- attempts_dropped, so a task lost over and over cannot grow its list without end.
-- Returns {'ok', attempt, field1, value1, ...} (the task's hash after the change, so the worker needs no
-- second read) or {'gone', state} if the task is no longer INQUEUE on this node (killed, deleted, or
-- re-placed elsewhere).
local id, node = ARGV[2], ARGV[3]
local tkey = P .. 'task:' .. id
local state = redis.call('HGET', tkey, 'state')
if ARGV[4] == '1' and state == 'RUNNING' and redis.call('HGET', tkey, 'node') == node then
  local out = {'ok', tonumber(redis.call('HGET', tkey, 'attempts'))}
  for _, v in ipairs(redis.call('HGETALL', tkey)) do out[#out + 1] = v end
  return out
end
if state ~= 'INQUEUE' or redis.call('HGET', tkey, 'node') ~= node then
  return {'gone', state or ''}
end
local t = now()
local attempt = redis.call('HINCRBY', tkey, 'attempts', 1)
set_state(id, 'INQUEUE', 'RUNNING')
redis.call('HSET', tkey, 'started_at', fmt(t))
local akey = P .. 'attempts:' .. id
local first = tonumber(ARGV[5])
local held = redis.call('RPUSH', akey, cjson.encode({number = attempt, node = node, started_at = t}))
if held > first + tonumber(ARGV[6]) then
  redis.call('LSET', akey, first, '')
  redis.call('LREM', akey, 1, '')
  redis.call('HINCRBY', tkey, 'attempts_dropped', 1)
end
publish(id, 'RUNNING', node, t)
local out = {'ok', attempt}
for _, v in ipairs(redis.call('HGETALL', tkey)) do out[#out + 1] = v end
return out
