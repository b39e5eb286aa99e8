-- Hand back tasks placed on a node that lost them: each goes back to WAITING and to the pending stream,
-- its open attempt closed as 'node lost'. Two uses:
--   * every task of the node (it restarted, stopped, or was declared dead): the node's assigned set and
--     inbox are dropped with them, so that a returning node cannot run what was re-placed elsewhere;
--   * only the ids given (the node found them placed on it but neither running nor ordered: their run
--     order or a state change was lost). An id no longer INQUEUE or RUNNING on the node is only taken out
--     of its assigned set (a left-over member would hold a slot for ever).
-- ARGV: prefix, epoch ('' when the node hands back its own work), node, reason, then optional task ids.
-- Returns {'stale', current_epoch} or {'ok', id1, id2, ...}: the ids handed back.
local cur = stale(ARGV[2])
if cur then return {'stale', cur} end
local node, reason = ARGV[3], ARGV[4]
local akey = P .. 'assigned:' .. node
local ids = {}
for k = 5, #ARGV do ids[#ids + 1] = ARGV[k] end
local whole = #ids == 0
if whole then ids = redis.call('SMEMBERS', akey) end
local t = now()
local out = {'ok'}
for _, id in ipairs(ids) do
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
  if not whole then redis.call('SREM', akey, id) end
end
if whole then redis.call('DEL', akey, P .. 'inbox:' .. node) end
return out
