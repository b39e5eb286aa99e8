-- The master places WAITING tasks on one node, never beyond its free slots, fenced by its epoch.
-- ARGV: prefix, epoch, node, slots, then task ids.
-- Returns {'stale', current_epoch} or {'ok', s1, s2, ...} with per id: 1 placed, 0 gone (no longer
-- WAITING: killed, deleted or placed already), -1 no room left on the node.
local cur = stale(ARGV[2])
if cur then return {'stale', cur} end
local node = ARGV[3]
local free = tonumber(ARGV[4]) - redis.call('SCARD', P .. 'assigned:' .. node)
local t = now()
local out = {'ok'}
for i = 5, #ARGV do
  local id = ARGV[i]
  local tkey = P .. 'task:' .. id
  local state = redis.call('HGET', tkey, 'state')
  if state ~= 'WAITING' or redis.call('ZSCORE', P .. 'delayed', id) then
    out[#out + 1] = 0
  elseif free <= 0 then
    out[#out + 1] = -1
  else
    set_state(id, 'WAITING', 'INQUEUE')
    redis.call('HSET', tkey, 'node', node)
    redis.call('SADD', P .. 'assigned:' .. node, id)
    redis.call('XADD', P .. 'inbox:' .. node, '*', 'op', 'run', 'id', id)
    publish(id, 'INQUEUE', node, t)
    free = free - 1
    out[#out + 1] = 1
  end
end
return out
