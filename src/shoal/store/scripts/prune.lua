-- Forget nodes declared dead (or rejected) that have not beaten for ARGV[3] seconds: their record, their
-- place in 'nodes', their inbox and their (empty) assigned set, so that a cluster whose nodes come and go
-- under new names keeps a bounded store. A node that still has tasks assigned is kept (the master hands
-- them back first); a node that comes back later simply joins again.
-- ARGV: prefix, epoch (fencing), seconds since the last beat, most forgotten per call.
-- Returns {'ok', forgotten names...} or {'stale', current epoch}.
local cur = stale(ARGV[2])
if cur then return {'stale', cur} end
local before = now() - tonumber(ARGV[3])
local out = {'ok'}
for _, name in ipairs(redis.call('ZRANGEBYSCORE', P .. 'nodes', '-inf', before, 'LIMIT', 0, tonumber(ARGV[4]))) do
  local state = redis.call('HGET', P .. 'node:' .. name, 'state')
  if (state == 'dead' or state == 'rejected' or not state)
      and redis.call('SCARD', P .. 'assigned:' .. name) == 0 then
    redis.call('ZREM', P .. 'nodes', name)
    redis.call('DEL', P .. 'node:' .. name, P .. 'inbox:' .. name, P .. 'assigned:' .. name)
    out[#out + 1] = name
  end
end
if #out > 1 then redis.call('INCR', P .. 'membership') end
return out
