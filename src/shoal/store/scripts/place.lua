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
  local name, types = ARGV[i], {}
  for t in string.gmatch(ARGV[i + 2], '[^,]+') do types[t] = true end
  local free = tonumber(ARGV[i + 1]) - redis.call('SCARD', P .. 'assigned:' .. name)
  local record = redis.call('HMGET', P .. 'node:' .. name, 'state', 'draining')
  -- Since the master looked, the node may have been declared dead or rejected, or begun to leave (it
  -- hands back what it holds; a task placed on it after that would wait there for ever).
  if record[1] == 'dead' or record[1] == 'rejected' or record[2] == '1' then free = 0 end
  nodes[k] = {name = name, free = free, types = types, placed = {}}
  i = i + 3
end
local n = tonumber(ARGV[i])
i = i + 1
local t = now()
local out = {'ok'}
local acks = {}  -- stream -> entries
-- The node with the most free slots that runs ``ttype`` (nil when none has room).
local function best_for(ttype)
  local best
  for k, node in ipairs(nodes) do
    if node.free > 0 and (node.types['*'] or node.types[ttype]) and (not best or node.free > nodes[best].free) then
      best = k
    end
  end
  return best
end
for _ = 1, n do
  local id, entry, ttype = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  i = i + 3
  local verdict = -1
  -- A task offered again and again while every node is full is not read each time: only when there is room.
  local best = ttype ~= '' and best_for(ttype)
  if ttype == '' or best then
    local tkey = P .. 'task:' .. id
    local task = redis.call('HMGET', tkey, 'state', 'seq', 'due', 'type')
    if ttype == '' then
      ttype = task[4] or ''
      best = best_for(ttype)
    end
    verdict = 0
    if task[1] == 'WAITING' and not task[3] then
      verdict = -1
      if best then
        local node = nodes[best]
        redis.call('HSET', tkey, 'state', 'INQUEUE', 'node', node.name, 'epoch', epoch)
        move_later(id, task[2], 'WAITING', 'INQUEUE')
        node.placed[#node.placed + 1] = id
        publish(id, 'INQUEUE', node.name, t)
        node.free = node.free - 1
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
for _, node in ipairs(nodes) do
  if #node.placed > 0 then
    variadic('SADD', P .. 'assigned:' .. node.name, node.placed)
    redis.call('XADD', P .. 'inbox:' .. node.name, '*', 'op', 'run', 'ids', table.concat(node.placed, ','))
  end
end
for stream, entries in pairs(acks) do
  redis.call('XACK', stream, 'scheduler', unpack(entries))
  redis.call('XDEL', stream, unpack(entries))
end
return out
