-- Index in 'ended' (and 'expiry') the finished tasks that are not: those a shoal without retention finished
-- (before an upgrade, or on a node not yet upgraded in a rolling upgrade), so that the sweep removes them
-- too. Looks at ARGV[5] tasks of the index of state ARGV[3] from rank ARGV[4] on.
-- ARGV: prefix, epoch (fencing), state (a terminal one), first rank, how many.
-- Returns {'ok', indexed, next rank (-1 at the end of the index)} or {'stale', current epoch}.
local cur = stale(ARGV[2])
if cur then return {'stale', cur} end
local first, count = tonumber(ARGV[4]), tonumber(ARGV[5])
local ids = redis.call('ZRANGE', P .. 'index:' .. ARGV[3], first, first + count - 1)
local at, due = {}, {}
for _, id in ipairs(ids) do
  if not redis.call('ZSCORE', P .. 'ended', id) then
    local task = redis.call('HMGET', P .. 'task:' .. id, 'finished_at', 'result_ttl', 'created_at')
    local t = tonumber(task[1]) or tonumber(task[3]) or now()
    at[#at + 1] = t
    at[#at + 1] = id
    local ttl = tonumber(task[2])
    if ttl then
      due[#due + 1] = t + ttl
      due[#due + 1] = id
    end
  end
end
if #at > 0 then variadic('ZADD', P .. 'ended', at) end
if #due > 0 then variadic('ZADD', P .. 'expiry', due) end
return {'ok', #at / 2, #ids < count and -1 or first + count}
