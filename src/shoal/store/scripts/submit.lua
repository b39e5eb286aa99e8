-- Store new tasks as WAITING and queue them for placement, all or nothing, in one step however many.
-- ARGV: prefix, count, then per task: id, name, type, target, params (JSON), timeout_s ('' = none), max_retries,
-- max_lost_attempts, memory_mb ('' = none), cpu_s_limit ('' = none)
-- Returns: the creation time, then each task's sequence number.
local t = now()
local n = tonumber(ARGV[2])
local first = redis.call('INCRBY', P .. 'seq', n) - n + 1
local out = {fmt(t)}
local all = {}
for i = 0, n - 1 do
  local b = 3 + i * 10
  local id, seq = ARGV[b], first + i
  redis.call('HSET', P .. 'task:' .. id,
    'id', id, 'name', ARGV[b + 1], 'type', ARGV[b + 2], 'target', ARGV[b + 3], 'params', ARGV[b + 4],
    'timeout_s', ARGV[b + 5], 'max_retries', ARGV[b + 6], 'max_lost_attempts', ARGV[b + 7],
    'memory_mb', ARGV[b + 8], 'cpu_s_limit', ARGV[b + 9],
    'state', 'WAITING', 'node', '', 'attempts', 0,
    'created_at', fmt(t), 'seq', seq)
  all[#all + 1] = seq
  all[#all + 1] = id
  move_later(id, seq, nil, 'WAITING')
  enqueue(id, ARGV[b + 2])
  publish(id, 'WAITING', '', t)
  out[#out + 1] = seq
end
variadic('ZADD', P .. 'index:all', all)
return out
