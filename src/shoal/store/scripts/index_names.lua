-- The upgrade to schema 4: add the tasks whose sequence numbers are in [ARGV[2], ARGV[3]) to the name index,
-- reading the state indexes given in one step (so that no task moving between them meanwhile is missed).
-- ARGV: prefix, lowest, highest (excluded), then the states. Returns how many tasks it indexed.
local lo, hi, add = ARGV[2], '(' .. ARGV[3], {}
for k = 4, #ARGV do
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'index:' .. ARGV[k], lo, hi)) do
    local f = redis.call('HMGET', P .. 'task:' .. id, 'name', 'seq')
    if f[1] and f[2] then
      add[#add + 1] = 0
      add[#add + 1] = name_entry(f[1], f[2], id)
    end
  end
end
variadic('ZADD', P .. 'names', add)
return #add / 2
