-- Delete a task and everything kept about it, killing it first if it is not terminal.
-- ARGV: prefix, id. Returns {'ok', previous_state} or {'gone'}.
local id = ARGV[2]
local tkey = P .. 'task:' .. id
local f = redis.call('HMGET', tkey, 'state', 'name', 'seq', 'type')
local state = f[1]
if not state then return {'gone'} end
local t = now()
if state ~= 'SUCCEED' and state ~= 'RUNTIME_ERROR' and state ~= 'KILLED' then
  kill_task(id, state, t, 'deleted by user')
  ENDED[#ENDED] = nil  -- it is deleted here, not kept until it expires
  settle(id, 'KILLED', 'deleted by user', t)  -- its waiting children, as for any end (settle_children)
  state = 'KILLED'
end
local wf = redis.call('HGET', tkey, 'wf')
if wf then redis.call('SREM', P .. 'wf:' .. wf, id) end
redis.call('ZREM', P .. 'index:' .. state, id)
redis.call('ZREM', P .. 'index:all', id, P .. 'ended', id)  -- older versions' indexes, if a node of one wrote them
redis.call('ZREM', P .. 'expiry', id)
if f[2] and f[3] then redis.call('ZREM', P .. 'names', name_entry(f[2], f[3], id)) end
redis.call('DEL', tkey, P .. 'attempts:' .. id, P .. 'result:' .. id, P .. 'dupes:' .. id, P .. 'children:' .. id)
publish(id, 'DELETED', '', t, f[4] or '')
return {'ok', state}
