-- Delete a task and everything kept about it, killing it first if it is not terminal.
-- ARGV: prefix, id. Returns {'ok', previous_state} or {'gone'}.
local id = ARGV[2]
local tkey = P .. 'task:' .. id
local state = redis.call('HGET', tkey, 'state')
if not state then return {'gone'} end
local t = now()
if state ~= 'SUCCEED' and state ~= 'RUNTIME_ERROR' and state ~= 'KILLED' then
  kill_task(id, state, t, 'deleted by user')
  ENDED[#ENDED] = nil  -- it is deleted here, not kept until it expires
  state = 'KILLED'
end
redis.call('ZREM', P .. 'index:' .. state, id)
redis.call('ZREM', P .. 'index:all', id, P .. 'ended', id)  -- older versions' indexes, if a node of one wrote them
redis.call('ZREM', P .. 'expiry', id)
redis.call('DEL', tkey, P .. 'attempts:' .. id, P .. 'result:' .. id, P .. 'dupes:' .. id)
publish(id, 'DELETED', '', t)
return {'ok', state}
