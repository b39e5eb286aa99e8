-- The master places WAITING tasks on nodes, never beyond a node's free slots, fenced by its epoch.
-- Each task goes to the node with the most free slots that runs its type (the seed's "least loaded
-- queue", done right), among the nodes whose labels it requires, all in one atomic step however many
-- tasks and nodes there are; and only while every limit it is held to has room (shoal.limits).
-- ARGV: prefix, epoch, node count, then per node: name, slots, its task types as a comma list ('*' = any),
--       then task count, then per task: id, the entry it came from in its type's pending stream ('' = none),
--       its type ('' = read from the task), the nodes it may go to as a comma list of their indexes ('' =
--       any), and its limits ('' = none), one per line: kind TAB name TAB number, where kind 'c' allows at
--       most number placed and unfinished at once (their ids in 'active:{name}'), 'r' at most number starts
--       per second (a token bucket 'bucket:{name}', bursts of up to max(1, number)), and 'h' none while the
--       host hold 'hold:{name}' lives (a site's Retry-After).
-- Entries of tasks placed or gone are acknowledged and deleted here. Each node gets one run order for all
-- the tasks placed on it ('ids', comma-separated), and one event message tells of them all.
-- Returns {'stale', current_epoch} or {'ok', v1, v2, ...}: per task the index (1-based) of the node it
-- was placed on, 0 if it is gone (no longer WAITING: killed, deleted or placed already, or waiting out a
-- retry's backoff), -1 if no node running its type has room (a task is then not read: it may be gone too),
-- or, for a task a limit holds back, that limit as kind .. ':' .. name ('c:fetch:example.org').
-- its events go out on the progress channel unless one ends a task, or a step beside it says not (_lib.lua)
if PROGRESS == nil then PROGRESS = true end
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

-- A limit's set of placed, unfinished tasks outlives its last placement by this long (then a key used once,
-- a customer's say, leaves nothing behind); a task that runs longer under a limit stops being counted.
local ACTIVE_TTL_MS = 86400000
local full = {}  -- limits found without room in this call: the later tasks they hold are not looked at

local function parse_limits(spec)
  local limits = {}
  for kind, name, number in string.gmatch(spec, '([chr])\t([^\t\n]+)\t([^\n]*)') do
    limits[#limits + 1] = {kind = kind, name = name, n = tonumber(number) or 0}
  end
  return limits
end

-- The first of ``limits`` without room ('kind:name'), or nil when all have room (their buckets refilled).
local function held_by(limits)
  for _, l in ipairs(limits) do
    local label = l.kind .. ':' .. l.name
    if full[label] then return label end
    local room = true
    if l.kind == 'h' then
      room = redis.call('EXISTS', P .. 'hold:' .. l.name) == 0
    elseif l.kind == 'c' then
      local key = P .. 'active:' .. l.name
      if redis.call('SCARD', key) >= l.n then  -- drop the tasks that have finished or gone back to WAITING
        for _, member in ipairs(redis.call('SMEMBERS', key)) do
          local state = redis.call('HGET', P .. 'task:' .. member, 'state')
          if state ~= 'INQUEUE' and state ~= 'RUNNING' then redis.call('SREM', key, member) end
        end
        room = redis.call('SCARD', key) < l.n
      end
    else
      local bucket = redis.call('HMGET', P .. 'bucket:' .. l.name, 'tokens', 'at')
      l.burst = math.max(1, l.n)
      l.tokens = math.min(l.burst, (tonumber(bucket[1]) or l.burst) + (t - (tonumber(bucket[2]) or t)) * l.n)
      room = l.tokens >= 1
    end
    if not room then
      full[label] = true
      return label
    end
  end
  return nil
end

local function take(limits, id)
  for _, l in ipairs(limits) do
    if l.kind == 'c' then
      redis.call('SADD', P .. 'active:' .. l.name, id)
      redis.call('PEXPIRE', P .. 'active:' .. l.name, ACTIVE_TTL_MS)
    elseif l.kind == 'r' then
      local key = P .. 'bucket:' .. l.name
      redis.call('HSET', key, 'tokens', l.tokens - 1, 'at', fmt(t))
      redis.call('PEXPIRE', key, math.ceil(l.burst / l.n * 1000) + 1000)  -- full again by then
    end
  end
end

for _ = 1, n do
  local id, entry, ttype, only, spec = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  i = i + 5
  local allowed
  if only ~= '' then
    allowed = {}
    for k in string.gmatch(only, '[^,]+') do allowed[tonumber(k)] = true end
  end
  local verdict = -1
  -- A task offered again and again while every node is full is not read each time: only when there is room.
  local best = ttype ~= '' and best_for(nodes, ttype, allowed)
  if ttype == '' or best then
    local tkey = P .. 'task:' .. id
    local task = redis.call('HMGET', tkey, 'state', 'seq', 'due', 'type')
    if ttype == '' then
      ttype = task[4] or ''
      best = best_for(nodes, ttype, allowed)
    end
    verdict = 0
    if task[1] == 'WAITING' and not task[3] then
      verdict = -1
      if best then
        local limits = spec ~= '' and parse_limits(spec)
        local held = limits and held_by(limits)
        if held then
          verdict = held
        else
          if limits then take(limits, id) end
          redis.call('HSET', tkey, 'state', 'INQUEUE', 'node', nodes[best].name, 'epoch', epoch)
          placed_on(nodes[best], id, task[2], 'WAITING', t, ttype)
          verdict = best
        end
      end
    end
  end
  if entry ~= '' and type(verdict) == 'number' and verdict >= 0 then
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
