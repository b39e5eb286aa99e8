-- The master places WAITING tasks on nodes, never beyond a node's free slots, fenced by its epoch.
-- Each task goes to the node with the most free slots that runs its type (the seed's "least loaded
-- queue", done right), all in one atomic step however many tasks and nodes there are.
-- ARGV: prefix, epoch, node count, then per node: name, slots, its task types as a comma list ('*' = any),
--       then task count, then per task: id, the entry it came from in its type's pending stream ('' = none),
--       its type ('' = read from the task).
-- Entries of tasks placed or gone are acknowledged and deleted here. Each node gets one run order for all
-- the tasks placed on it ('ids', comma-separated), and one event message tells of them all.
-- Returns {'stale', current_epoch} or {'ok', v1, v2, ...}: per task the index (1-based) of the node it
-- was placed on, 0 if it is gone (no longer WAITING: killed, deleted or placed already, or waiting out a
-- retry's backoff), -1 if no node running its type has room (a task is then not read: it may be gone too).
local cur = stale(ARGV[2])
if cur then return {'stale', cur} end
local epoch = ARGV[2]
local nodes, i = {}, 4
for k = 1, tonumber(ARGV[3]) do
  nodes[k] = load_node(ARGV[i], ARGV[i + 1], ARGV[i + 2])
  i = i + 3
end
local n = tonumber(ARGV[i])
i = i + 1
local t = now()
local out = {'ok'}
local acks = {}  -- stream -> entries
for _ = 1, n do
  local id, entry, ttype = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  i = i + 3
  local verdict = -1
  -- A task offered again and again while every node is full is not read each time: only when there is room.
  local best = ttype ~= '' and best_for(nodes, ttype)
  if ttype == '' or best then
    local tkey = P .. 'task:' .. id
    local task = redis.call('HMGET', tkey, 'state', 'seq', 'due', 'type')
    if ttype == '' then
      ttype = task[4] or ''
      best = best_for(nodes, ttype)
    end
    verdict = 0
    if task[1] == 'WAITING' and not task[3] then
      verdict = -1
      if best then
        redis.call('HSET', tkey, 'state', 'INQUEUE', 'node', nodes[best].name, 'epoch', epoch)
        placed_on(nodes[best], id, task[2], 'WAITING', t)
        verdict = best
      end
    end
  end
  if entry ~= '' and verdict >= 0 then
    local stream = P .. 'pending:' .. ttype
    acks[stream] = acks[stream] or {}
    table.insert(acks[stream], entry)
  end
  out[#out + 1] = verdict
end
send_orders(nodes)
for stream, entries in pairs(acks) do
  redis.call('XACK', stream, 'scheduler', unpack(entries))
  redis.call('XDEL', stream, unpack(entries))
end
return out
