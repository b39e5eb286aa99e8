-- Kill a task in any non-terminal state. ARGV: prefix, id, reason.
-- Returns {'ok', previous_state}, {'illegal', state} for a terminal task, or {'gone'}.
local id = ARGV[2]
local state = redis.call('HGET', P .. 'task:' .. id, 'state')
if not state then return {'gone'} end
if state == 'SUCCEED' or state == 'RUNTIME_ERROR' or state == 'KILLED' then
  return {'illegal', state}
end
kill_task(id, state, now(), ARGV[3])
return {'ok', state}
