-- Take or renew the master lease; the epoch never goes backwards.
-- ARGV: prefix, node, ttl in ms, term (the epoch this node is master in; '0' if it acts as master in none;
-- '' to renew whatever term the store has), floor (the highest epoch this node has seen).
-- Returns {'renewed', epoch}, {'won', new_epoch} or {'held', holder, epoch}.
-- A renewal is one only while the store still holds this node's term. If the store lost writes (a restart
-- without persistence, a failover to a replica that lagged), the lease may be this node's under another
-- epoch, or free under an epoch lower than one already used; then this is a new term, numbered above both
-- the store's epoch and the floor, so no two terms ever share an epoch. A new master's win is written on
-- the membership timeline.
local node, ttl, term = ARGV[2], ARGV[3], ARGV[4]
local floor = tonumber(ARGV[5]) or 0
local holder = redis.call('GET', P .. 'lease')
local cur = tonumber(redis.call('GET', P .. 'epoch') or '0') or 0
if holder == node and (term == '' or tonumber(term) == cur) then
  redis.call('PEXPIRE', P .. 'lease', ttl)
  return {'renewed', string.format('%d', cur)}
end
if holder and holder ~= node then
  return {'held', holder, string.format('%d', cur)}
end
local epoch = string.format('%d', math.max(cur, floor) + 1)
redis.call('SET', P .. 'lease', node, 'PX', ttl)
redis.call('SET', P .. 'epoch', epoch)
redis.call('DEL', P .. 'handover')
local rule = 'took the free master lease'
if holder == node and term ~= '0' then
  rule = string.format('its term (epoch %s) was no longer in the store (the store is at epoch %d): a new term', term, cur)
elseif holder == node then
  rule = 'took over the lease it held before it restarted: a new term'
end
if floor > cur then
  rule = rule .. string.format('; the store was at epoch %d, below epoch %d seen before: it lost writes', cur, floor)
end
timeline('elected', node, rule, epoch, '{}')
return {'won', epoch}
