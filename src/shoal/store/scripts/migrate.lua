-- Move entries of the single pending stream of older versions into the per-type pending streams, oldest
-- first, at most ARGV[2] per call so that a large backlog never holds the store for long. An entry whose
-- task is gone or no longer WAITING is dropped (placement would drop it too). The old stream is deleted,
-- consumer group and all, once empty.
-- ARGV: prefix, most entries to move. Returns {moved, left}.
local old = P .. 'pending'
if redis.call('EXISTS', old) == 0 then return {0, 0} end
local moved = 0
for _, entry in ipairs(redis.call('XRANGE', old, '-', '+', 'COUNT', tonumber(ARGV[2]))) do
  local fields, id = entry[2], nil
  for k = 1, #fields, 2 do
    if fields[k] == 'id' then id = fields[k + 1] end
  end
  if id then
    local task = redis.call('HMGET', P .. 'task:' .. id, 'state', 'type')
    if task[1] == 'WAITING' then
      enqueue(id, task[2])
      moved = moved + 1
    end
  end
  redis.call('XDEL', old, entry[1])
end
local left = redis.call('XLEN', old)
if left == 0 then redis.call('DEL', old) end
return {moved, left}
