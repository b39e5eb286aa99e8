-- The master places WAITING tasks on one node, never beyond its free slots, fenced by its epoch.
-- ARGV: prefix, epoch, node, slots, n, then n task ids, then (optionally) the n pending-stream entries
-- they came from, acknowledged and deleted here for every task that is placed or gone.
-- Returns {'stale', current_epoch} or {'ok', s1, s2, ...} with per id: 1 placed, 0 gone (no longer
-- WAITING: killed, deleted or placed already), -1 no room left on the node.
local cur = stale(ARGV[2])
if cur then return {'stale', cur} end
local node = ARGV[3]
local free = tonumber(ARGV[4]) - redis.call('SCARD', P .. 'assigned:' .. node)
local n = tonumber(ARGV[5])
local t = now()
local out = {'ok'}
for i = 1, n do
  local id = ARGV[5 + i]
  local entry = ARGV[5 + n + i]
  local tkey = P .. 'task:' .. id
  local state = redis.call('HGET', tkey, 'state')
  local verdict
  if state ~= 'WAITING' or redis.call('ZSCORE', P .. 'delayed', id) then
    verdict = 0
  elseif free <= 0 then
    verdict = -1
  else
    set_state(id, 'WAITING', 'INQUEUE')
    redis.call('HSET', tkey, 'node', node, 'epoch', ARGV[2])
    redis.call('SADD', P .. 'assigned:' .. node, id)
    redis.call('XADD', P .. 'inbox:' .. node, '*', 'op', 'run', 'id', id)
    publish(id, 'INQUEUE', node, t)
    free = free - 1
    verdict = 1
  end
  if entry and verdict >= 0 then
    redis.call('XACK', P .. 'pending', 'scheduler', entry)
    redis.call('XDEL', P .. 'pending', entry)
  end
  out[#out + 1] = verdict
end
return out
