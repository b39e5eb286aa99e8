-- Hand back every task placed on a node that lost them (it restarted, or was declared dead): each goes
-- back to WAITING and to the pending stream, its open attempt closed as 'node lost'. The node's inbox
-- is dropped with them, so that a returning node cannot run what was re-placed elsewhere.
-- ARGV: prefix, epoch ('' when the node hands back its own work), node, reason.
-- Returns {'stale', current_epoch} or {'ok', id1, id2, ...}.
local cur = stale(ARGV[2])
if cur then return {'stale', cur} end
local node, reason = ARGV[3], ARGV[4]
local t = now()
local out = {'ok'}
for _, id in ipairs(redis.call('SMEMBERS', P .. 'assigned:' .. node)) do
  local tkey = P .. 'task:' .. id
  local state = redis.call('HGET', tkey, 'state')
  if (state == 'INQUEUE' or state == 'RUNNING') and redis.call('HGET', tkey, 'node') == node then
    if state == 'RUNNING' then close_attempt(id, 'node lost', reason, t) end
    set_state(id, state, 'WAITING')
    redis.call('HSET', tkey, 'node', '')
    redis.call('XADD', P .. 'pending', '*', 'id', id, 'type', redis.call('HGET', tkey, 'type'))
    publish(id, 'WAITING', '', t)
    out[#out + 1] = id
  end
end
redis.call('DEL', P .. 'assigned:' .. node, P .. 'inbox:' .. node)
return out
