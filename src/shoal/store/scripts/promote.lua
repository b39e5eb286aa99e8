-- Queue the retries whose backoff has run out. ARGV: prefix, most to move.
-- Returns {moved, next_due or ''}.
local t = now()
local due = redis.call('ZRANGEBYSCORE', P .. 'delayed', '-inf', t, 'LIMIT', 0, tonumber(ARGV[2]))
if #due > 0 then variadic('ZREM', P .. 'delayed', due) end
for _, id in ipairs(due) do
  local tkey = P .. 'task:' .. id
  local task = redis.call('HMGET', tkey, 'state', 'type')
  if task[1] == 'WAITING' then
    redis.call('HDEL', tkey, 'due')
    enqueue(id, task[2])
  end
end
local nxt = redis.call('ZRANGE', P .. 'delayed', 0, 0, 'WITHSCORES')
return {#due, nxt[2] or ''}
