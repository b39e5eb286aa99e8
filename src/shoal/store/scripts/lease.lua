-- Take or renew the master lease. ARGV: prefix, node, ttl in ms, incarnation of the node.
-- Returns {'renewed', epoch}, {'won', new_epoch} or {'held', holder, epoch}. A new master's win is
-- written on the membership timeline.
local node, ttl = ARGV[2], ARGV[3]
local holder = redis.call('GET', P .. 'lease')
if holder == node then
  redis.call('PEXPIRE', P .. 'lease', ttl)
  return {'renewed', redis.call('GET', P .. 'epoch') or '0'}
end
if holder then
  return {'held', holder, redis.call('GET', P .. 'epoch') or '0'}
end
redis.call('SET', P .. 'lease', node, 'PX', ttl)
local epoch = tostring(redis.call('INCR', P .. 'epoch'))
redis.call('DEL', P .. 'handover')
timeline('elected', node, 'took the free master lease', epoch, '{}')
return {'won', epoch}
