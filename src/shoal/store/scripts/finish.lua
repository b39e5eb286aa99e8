-- A node reports how an attempt ended. The first terminal report wins; a report from an attempt that
-- is no longer the task's current one (a late result: its node was lost or handed it back, and it finished
-- after all) is kept in dupes:{id} with its result in full, never written over the task; the latest ones
-- are kept, at most ARGV[11].
-- ARGV: prefix, id, node, attempt, outcome ('succeeded' | 'failed' | 'timed out' | 'crashed' | 'over limit'),
-- error, result JSON ('' when none), retry backoff base in seconds, footprint JSON ('' when not measured),
-- max_lost_attempts for a task stored without one, most late results kept.
-- A failed attempt (any outcome but 'succeeded') is retried while the task's failures are within its
-- max_retries, after backoff * 2^(failures - 1) seconds (at most 60); attempts lost or handed back with
-- their node are not failures. A crashed attempt is also a lost one (see count_lost in _lib.lua).
-- Returns {'done', state}, {'retry', due}, {'duplicate', state} or {'gone'}.
local id, node, attempt, outcome, err, result = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7]

-- Whether this very report was taken already: the retry of a report whose reply was lost (the attempt closed
-- with this outcome on this node, or a late report of it kept), which is no late result of its own.
local function reported_before(id, node, attempt, outcome)
  for _, raw in ipairs(redis.call('LRANGE', P .. 'attempts:' .. id, 0, -1)) do
    local a = cjson.decode(raw)
    if a.number == attempt and a.node == node and a.outcome == outcome then return true end
  end
  for _, raw in ipairs(redis.call('LRANGE', P .. 'dupes:' .. id, 0, -1)) do
    local d = cjson.decode(raw)
    if d.attempt == attempt and d.node == node then return true end
  end
  return false
end
local tkey = P .. 'task:' .. id
local task = redis.call('HMGET', tkey, 'state', 'node', 'attempts', 'max_retries')
local state = task[1]
if not state then return {'gone'} end
local t = now()
if state ~= 'RUNNING' or task[2] ~= node or tonumber(task[3]) ~= attempt then
  if not reported_before(id, node, attempt, outcome) then
    local dkey = P .. 'dupes:' .. id
    redis.call('RPUSH', dkey, cjson.encode({node = node, attempt = attempt, outcome = outcome, error = err,
      finished_at = t, result = result}))
    redis.call('LTRIM', dkey, -tonumber(ARGV[11]), -1)
  end
  return {'duplicate', state}
end
close_attempt(id, outcome, err, t, ARGV[9] ~= '' and cjson.decode(ARGV[9]) or nil)
redis.call('SREM', P .. 'assigned:' .. node, id)
if outcome == 'succeeded' then
  redis.call('SET', P .. 'result:' .. id, result)
  set_state(id, 'RUNNING', 'SUCCEED')
  redis.call('HSET', tkey, 'finished_at', fmt(t), 'error', '')
  publish(id, 'SUCCEED', node, t)
  return {'done', 'SUCCEED'}
end
if LOST[outcome] and count_lost(id, 'RUNNING', node, t, ARGV[10]) then
  return {'done', 'RUNTIME_ERROR'}
end
local failures = redis.call('HINCRBY', tkey, 'failures', 1)
if failures <= tonumber(task[4]) then
  local due = t + math.min(60, tonumber(ARGV[8]) * 2 ^ (failures - 1))
  set_state(id, 'RUNNING', 'WAITING')
  redis.call('HSET', tkey, 'node', '', 'error', err)
  redis.call('ZADD', P .. 'delayed', due, id)
  publish(id, 'WAITING', '', t)
  return {'retry', fmt(due)}
end
set_state(id, 'RUNNING', 'RUNTIME_ERROR')
redis.call('HSET', tkey, 'finished_at', fmt(t), 'error', err)
publish(id, 'RUNTIME_ERROR', node, t)
return {'done', 'RUNTIME_ERROR'}
