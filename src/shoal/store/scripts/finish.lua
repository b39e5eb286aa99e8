-- A node reports how attempts ended, any number in one step. The first terminal report wins; a report from
-- an attempt that is no longer the task's current one (a late result: its node was lost or handed it back,
-- and it finished after all) is kept in dupes:{id} with its result in full, never written over the task;
-- the latest ones are kept, at most ARGV[5].
-- ARGV: prefix, node, retry backoff base in seconds, max_lost_attempts for a task stored without one, most late
-- results kept, report count, then per report: id, attempt, outcome ('succeeded' | 'failed' | 'timed out' |
-- 'crashed' | 'over limit'), error, result JSON ('' when none), footprint JSON ('' when not measured), '1' to
-- have the task back once it has ended (read_back in _lib.lua; '' = not).
-- A succeeded attempt's result is stored in the task's hash (field 'result'). A failed attempt (any outcome
-- but 'succeeded') is retried while the task's failures are within its max_retries, after
-- backoff * 2^(failures - 1) seconds (at most 60); attempts lost or handed back with their node are not
-- failures. A crashed attempt is also a lost one (see count_lost in _lib.lua).
-- Returns per report {'done', state} (then the task, when asked for), {'retry', due}, {'duplicate', state} or
-- {'gone'}.
local node, backoff, default_lost, keep_late = ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
PROGRESS = false  -- a retry's WAITING is for every node too, whatever a step before or after it moves

-- Whether this very report was taken already: the retry of a report whose reply was lost (the attempt closed
-- with this outcome on this node, or a late report of it kept), which is no late result of its own.
local function reported_before(id, attempt, outcome, run)
  for _, a in ipairs(all_attempts(id, run)) do
    if a.number == attempt and a.node == node and a.outcome == outcome then return true end
  end
  for _, raw in ipairs(redis.call('LRANGE', P .. 'dupes:' .. id, 0, -1)) do
    local d = cjson.decode(raw)
    if d.attempt == attempt and d.node == node then return true end
  end
  return false
end

-- The reply of a report that ended its task ``id`` in ``state``; ``back``: '1' to have the task with it.
local function ended(id, state, back)
  local entry = {'done', state}
  if back == '1' then READ_BACK[#READ_BACK + 1] = {entry, id} end
  return entry
end

local t = now()
local out, done = {}, {}
for k = 0, tonumber(ARGV[6]) - 1 do
  local b = 7 + 7 * k
  local id, attempt, outcome, err, result, footprint, back =
    ARGV[b], tonumber(ARGV[b + 1]), ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5], ARGV[b + 6]
  local tkey = P .. 'task:' .. id
  local task = redis.call('HMGET', tkey, 'state', 'node', 'attempts', 'max_retries', 'seq', 'run', 'failures',
    'result_ttl', 'type')
  local state = task[1]
  if not state then
    out[#out + 1] = {'gone'}
  elseif state ~= 'RUNNING' or task[2] ~= node or tonumber(task[3]) ~= attempt then
    if not reported_before(id, attempt, outcome, task[6] or '') then
      local dkey = P .. 'dupes:' .. id
      redis.call('RPUSH', dkey, cjson.encode({node = node, attempt = attempt, outcome = outcome, error = err,
        finished_at = t, result = result}))
      redis.call('LTRIM', dkey, -keep_late, -1)
    end
    out[#out + 1] = {'duplicate', state}
  else
    done[#done + 1] = id
    local cost = footprint ~= '' and cjson.decode(footprint) or nil
    if outcome == 'succeeded' then
      local run = close_attempt(id, outcome, err, t, cost, task[6] or '', true, true)
      if type(run) == 'string' then
        redis.call('HSET', tkey, 'state', 'SUCCEED', 'finished_at', fmt(t), 'error', '', 'result', result, 'run', run)
      else
        redis.call('HSET', tkey, 'state', 'SUCCEED', 'finished_at', fmt(t), 'error', '', 'result', result)
      end
      move_later(id, task[5], 'RUNNING', 'SUCCEED', task[8])
      publish(id, 'SUCCEED', node, t, task[9] or '')
      out[#out + 1] = ended(id, 'SUCCEED', back)
    else
      close_attempt(id, outcome, err, t, cost, task[6] or '')
      if LOST[outcome] and count_lost(id, 'RUNNING', node, t, default_lost) then
        out[#out + 1] = ended(id, 'RUNTIME_ERROR', back)
      else
        local failures = (tonumber(task[7]) or 0) + 1
        if failures <= tonumber(task[4]) then
          local due = t + math.min(60, backoff * 2 ^ (failures - 1))
          redis.call('HSET', tkey, 'state', 'WAITING', 'node', '', 'error', err, 'failures', failures,
            'due', fmt(due))
          move_later(id, task[5], 'RUNNING', 'WAITING')
          redis.call('ZADD', P .. 'delayed', due, id)
          publish(id, 'WAITING', '', t, task[9] or '')
          out[#out + 1] = {'retry', fmt(due)}
        else
          redis.call('HSET', tkey, 'state', 'RUNTIME_ERROR', 'finished_at', fmt(t), 'error', err,
            'failures', failures)
          move_later(id, task[5], 'RUNNING', 'RUNTIME_ERROR', task[8])
          publish(id, 'RUNTIME_ERROR', node, t, task[9] or '')
          out[#out + 1] = ended(id, 'RUNTIME_ERROR', back)
        end
      end
    end
  end
end
if #done > 0 then variadic('SREM', P .. 'assigned:' .. node, done) end
return out
