-- Every node record, with how many tasks are placed on it, and the Redis clock: one call, whatever the
-- number of nodes (a pipeline of two commands a node cost each reader as much as the cluster is large).
-- ARGV: prefix. Returns {secs, micros, fields, assigned, fields, assigned, ...}, a node's fields as HGETALL
-- gives them (empty for a record gone meanwhile).
local t = redis.call('TIME')
local out = {t[1], t[2]}
for _, name in ipairs(redis.call('ZRANGE', P .. 'nodes', 0, -1)) do
  out[#out + 1] = redis.call('HGETALL', P .. 'node:' .. name)
  out[#out + 1] = redis.call('SCARD', P .. 'assigned:' .. name)
end
return out
