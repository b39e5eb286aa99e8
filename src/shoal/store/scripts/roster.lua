-- The master publishes the roster: the nodes a submit may place its tasks on as it stores them (see
-- submit.lua), as {"epoch", "nodes": [[name, slots, types as a comma list], ...], "skip": [types the master
-- places itself]}. It expires unless renewed, and counts only under the epoch it names.
-- ARGV: prefix, epoch, ttl (ms), the roster as JSON ('' withdraws it). Returns {'ok'} or {'stale', epoch}.
local cur = stale(ARGV[2])
if cur then return {'stale', cur} end
if ARGV[4] == '' then
  redis.call('DEL', P .. 'roster')
else
  redis.call('SET', P .. 'roster', ARGV[4], 'PX', ARGV[3])
end
return {'ok'}
