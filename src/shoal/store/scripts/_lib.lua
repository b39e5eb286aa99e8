-- Helpers shared by every shoal script; scripts.py puts this file in front of each one.
-- ARGV[1] is always the cluster's key prefix ("shoal:{cluster}:"); keys are built from it because a
-- task's keys (hash, indexes, node streams) are only known once the task has been read.
local P = ARGV[1]

-- The scripts of the hot path (scripts.PACKED) take their arguments after the prefix as one JSON array of
-- strings (redis-py spends about half a microsecond on each argument it sends, and a batch has tens of
-- thousands); this makes them the ARGV the script reads, prefix first.
-- A script of steps (scripts.STEPS) has one such array per step: ``at``, its position in ARGV (2 by default).
local function unpacked_argv(at)
  local args = cjson.decode(ARGV[at or 2])
  table.insert(args, 1, ARGV[1])
  return args
end

local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function fmt(t)
  return string.format('%.6f', t)
end

-- Add an event to the membership timeline. Its entry ID (the store's clock in ms, then a counter) is the
-- order events happened in; ``at`` is read in the same step, so it follows that order too.
local function timeline(kind, node, rule, epoch, extra)
  local t = now()
  redis.call('XADD', P .. 'timeline', 'MAXLEN', '~', 2000, '*', 'kind', kind, 'node', node,
    'rule', rule, 'epoch', epoch, 'at', fmt(t), 'extra', extra)
  return t
end

-- Task events are gathered while the script runs and added once at its end (flush, which scripts.py calls
-- after every script) to the stream 'task-events', as one entry however many tasks changed: field 'e', a JSON
-- array of {id, state, node, at, type} (store/task_events.py reads it). The stream is capped at about
-- EVENTS_KEEP entries, which scripts.py sets here (the node's event_retention). The same entry, its id and
-- its JSON, is published on EVENTS_CHANNEL, where the nodes hear it live without reading the stream; an
-- entry of a script that only moves tasks along (stores, places, starts: it sets PROGRESS) and ends none goes
-- to PROGRESS_CHANNEL instead, which only a node that shows every change (a watch) listens to: waits, the
-- master's placement and the throughput chart need the ends only, and every node woke for a task's submit,
-- placement and start as well as for its end.
local EVENTS_KEEP
local EVENTS_CHANNEL
local PROGRESS_CHANNEL
local PROGRESS = nil  -- a script of steps (scripts.STEPS) is progress only if each of its steps is
-- The seed's ``public`` channel (beats, membership verdicts, election requests) and the channel the
-- elections listen on (election requests only, so that no node has to hear every beat).
local PUBLIC_CHANNEL
local ELECTIONS_CHANNEL
local EVENTS = {}

-- ``ttype``: the task's type when the caller has it (nil: read here, one HGET; a caller that deletes the task
-- passes it, having read it first).
local function publish(id, state, node, t, ttype)
  if ttype == nil then ttype = redis.call('HGET', P .. 'task:' .. id, 'type') or '' end
  EVENTS[#EVENTS + 1] = {id = id, state = state, node = (node and node ~= '') and node or cjson.null, at = t,
    type = ttype}
end

-- Index writes of a batch, made at its end as one variadic ZREM and ZADD per index. A task that changes state
-- more than once in the script (stored and ended in one step: submit_finish) moves once, from its first state
-- to its last (the batch scripts check each task's state field, written at once).
local MOVES = {}

-- Tasks that ended in the script, {id, result_ttl}: flush indexes those with a result_ttl in 'expiry' (score:
-- when they expire). The retention sweep (expire.lua) finds the others in the finished states' indexes.
local TERMINAL = {SUCCEED = true, RUNTIME_ERROR = true, KILLED = true}
local ENDED = {}

local function move_later(id, seq, from, to, result_ttl)
  MOVES[#MOVES + 1] = {id, seq, from, to}
  if TERMINAL[to] then ENDED[#ENDED + 1] = {id, result_ttl or ''} end
end

-- Run a variadic command over ``args`` in chunks (Lua's unpack is limited to a few thousand values).
local function variadic(cmd, key, args)
  for i = 1, #args, 4000 do
    local last = math.min(#args, i + 3999)
    redis.call(cmd, key, unpack(args, i, last))
  end
end

local function flush()
  if #MOVES > 0 then
    local rem, add, first = {}, {}, {}  -- first: id -> its first move, which takes the last one's state
    for _, m in ipairs(MOVES) do
      local moved = first[m[1]]
      if moved then
        moved[4] = m[4]
      else
        first[m[1]] = m
      end
    end
    for _, m in ipairs(MOVES) do
      if first[m[1]] == m and m[3] ~= m[4] then
        if m[3] then
          rem[m[3]] = rem[m[3]] or {}
          table.insert(rem[m[3]], m[1])
        end
        add[m[4]] = add[m[4]] or {}
        table.insert(add[m[4]], m[2])
        table.insert(add[m[4]], m[1])
      end
    end
    for state, ids in pairs(rem) do variadic('ZREM', P .. 'index:' .. state, ids) end
    for state, pairs_ in pairs(add) do variadic('ZADD', P .. 'index:' .. state, pairs_) end
  end
  if #ENDED > 0 then
    local t = now()
    local due = {}
    for _, e in ipairs(ENDED) do
      local ttl = tonumber(e[2])
      if ttl then
        due[#due + 1] = t + ttl
        due[#due + 1] = e[1]
      end
    end
    if #due > 0 then variadic('ZADD', P .. 'expiry', due) end
  end
  if #EVENTS > 0 then
    local body = cjson.encode(EVENTS)
    local entry = redis.call('XADD', P .. 'task-events', 'MAXLEN', '~', EVENTS_KEEP, '*', 'e', body)
    local channel = PROGRESS and PROGRESS_CHANNEL or EVENTS_CHANNEL
    for _, e in ipairs(EVENTS) do
      if TERMINAL[e.state] or e.state == 'DELETED' then channel = EVENTS_CHANNEL end
    end
    redis.call('PUBLISH', channel, entry .. ' ' .. body)
  end
end

-- Tasks a caller wants back as they stand after the step, each {reply entry, id}: read_back, run once the
-- step is done, appends to the entry the task's hash, closed attempts, late results and children, all that
-- a read of the task takes (finish.lua: an ended task that a wait on the reporting node is for, which then
-- needs no read of its own).
local READ_BACK = {}
local function read_back()
  for _, r in ipairs(READ_BACK) do
    local entry, id = r[1], r[2]
    entry[#entry + 1] = redis.call('HGETALL', P .. 'task:' .. id)
    entry[#entry + 1] = redis.call('LRANGE', P .. 'attempts:' .. id, 0, -1)
    entry[#entry + 1] = redis.call('LRANGE', P .. 'dupes:' .. id, 0, -1)
    entry[#entry + 1] = redis.call('SMEMBERS', P .. 'children:' .. id)
  end
end

-- The name index ('names'): one entry per task, "name in lower case \0 sequence number \0 id", every one at
-- score 0, so that the tasks whose name starts with a text are one range of it (ZRANGEBYLEX) and their number
-- one ZLEXCOUNT (store/search.py). Lower case is ASCII's (string.lower), as the search's is.
local function name_entry(name, seq, id)
  return string.lower(name) .. '\0' .. seq .. '\0' .. id
end

-- Queue a WAITING task for placement in the pending stream of its type. Each type has its own stream (and
-- the scheduler's consumer group on it, made with the stream), so that tasks of a type no live node runs
-- wait there without holding up any other type.
local GROUPED = {}

-- The entry carries what placement needs besides the id, when the task has it: its priority ('p'), the
-- labels it requires ('r', JSON), its concurrency key ('k') and a fetch's host ('h'), so the master reads no
-- task to order and place it.
local PLACEMENT = {'prio', 'req', 'ckey', 'host'}
local ENTRY = {'p', 'r', 'k', 'h'}

local function enqueue(id, ttype, known)
  local stream = P .. 'pending:' .. ttype
  if not GROUPED[ttype] then
    GROUPED[ttype] = true
    if redis.call('SADD', P .. 'pending-types', ttype) == 1 then
      redis.pcall('XGROUP', 'CREATE', stream, 'scheduler', '0', 'MKSTREAM')  -- BUSYGROUP: it exists already
    end
  end
  local entry = {'id', id}
  -- ``known``: those fields as the caller has them ('' = none), so that a submit reads nothing back
  local got = known or redis.call('HMGET', P .. 'task:' .. id, unpack(PLACEMENT))
  for k = 1, #ENTRY do
    if got[k] and got[k] ~= '' then
      entry[#entry + 1] = ENTRY[k]
      entry[#entry + 1] = got[k]
    end
  end
  redis.call('XADD', stream, '*', unpack(entry))
end

-- Move a task between state indexes and set its state field.
local function set_state(id, from, to)
  local task = redis.call('HMGET', P .. 'task:' .. id, 'seq', 'result_ttl')
  redis.call('ZREM', P .. 'index:' .. from, id)
  redis.call('ZADD', P .. 'index:' .. to, task[1], id)
  redis.call('HSET', P .. 'task:' .. id, 'state', to)
  if TERMINAL[to] then ENDED[#ENDED + 1] = {id, task[2] or ''} end
end

-- A task's attempts: the latest one, open (started, not ended) or closed, is the field 'run' of its hash,
-- a JSON object (models.Attempt), so that a task that runs once never writes an attempt list. When the next
-- attempt starts, the one before goes to the list attempts:{id}, which keeps the first KEEP_FIRST and the
-- latest KEEP_LAST (scripts.py sets both): past that the oldest in between is dropped and counted in
-- attempts_dropped, so a task lost over and over cannot grow its list without end.
local KEEP_FIRST, KEEP_LAST

local function push_attempt(id, raw)
  local key = P .. 'attempts:' .. id
  if redis.call('RPUSH', key, raw) > KEEP_FIRST + KEEP_LAST - 1 then  -- the latest is 'run'
    redis.call('LSET', key, KEEP_FIRST, '')
    redis.call('LREM', key, 1, '')
    redis.call('HINCRBY', P .. 'task:' .. id, 'attempts_dropped', 1)
  end
end

-- The latest attempt ('run') leaves to the task's own fields what they say already (attempt field -> task
-- field), so that a task's hash stays small enough for the store's compact encoding: its start time always
-- (start.lua puts it back before the attempt goes to the list), and once the attempt has ended the task, all
-- of these (shed_shared).
local SHARED = {number = 'attempts', node = 'node', started_at = 'started_at', finished_at = 'finished_at',
  epoch = 'epoch'}

local function shed_shared(a)
  for name in pairs(SHARED) do a[name] = nil end
  if a.error == '' then a.error = nil end
end

-- ``a`` (a decoded 'run') with what it left to the task's fields put back: ``task`` maps field -> value, or
-- is nil to read them here. An open attempt has no end time of its own to take.
local function made_whole(a, id, task)
  if a.number ~= nil and a.started_at ~= nil and (a.outcome == nil or a.error ~= nil) then return a end
  if task == nil then
    task = {}
    local fields = {}
    for _, field in pairs(SHARED) do fields[#fields + 1] = field end
    for k, v in ipairs(redis.call('HMGET', P .. 'task:' .. id, unpack(fields))) do task[fields[k]] = v end
  end
  for name, field in pairs(SHARED) do
    local v = task[field]
    if a[name] == nil and v and v ~= '' and (name ~= 'finished_at' or a.outcome ~= nil) then
      a[name] = name == 'node' and v or tonumber(v)
    end
  end
  if a.outcome ~= nil and a.error == nil then a.error = '' end  -- a closed attempt always has its error
  return a
end

-- Every attempt record of a task, oldest first, decoded: the list's, then 'run' (``run``: that field when
-- the caller has read it already), made whole.
local function all_attempts(id, run)
  local out = {}
  for _, raw in ipairs(redis.call('LRANGE', P .. 'attempts:' .. id, 0, -1)) do out[#out + 1] = cjson.decode(raw) end
  if run == nil then run = redis.call('HGET', P .. 'task:' .. id, 'run') end
  if run and run ~= '' then out[#out + 1] = made_whole(cjson.decode(run), id) end
  return out
end

local function is_open(a)
  return a.outcome == nil or a.outcome == cjson.null
end

-- Close the open attempt of a task, if it has one, with what it cost where that was measured (``footprint``:
-- a table of wall_s, cpu_s, max_rss_bytes, exit_code, signal, or nil). ``run`` is the task's 'run' field when
-- the caller has read it already (nil: read here). Returns false when no attempt was open; else the closed
-- record's JSON for 'run' when ``caller_writes`` (the caller puts it in a write of its own), true otherwise.
-- ``final``: the attempt ends the task, whose fields then say the rest (shed_shared).
-- A task started by an earlier version keeps its open attempt as the list's last entry: closed in place.
local function close_attempt(id, outcome, err, t, footprint, run, caller_writes, final)
  local tkey = P .. 'task:' .. id
  if run == nil then run = redis.call('HGET', tkey, 'run') end
  local key, raw, legacy = P .. 'attempts:' .. id, run, false
  if not raw or raw == '' then
    raw, legacy = redis.call('LINDEX', key, -1), true
    if not raw then return false end
  end
  local a = cjson.decode(raw)
  if not is_open(a) then return false end
  a.finished_at = t
  a.outcome = outcome
  a.error = err
  for k, v in pairs(footprint or {}) do a[k] = v end
  if final and not legacy then shed_shared(a) end
  local json = cjson.encode(a)
  if legacy then
    redis.call('LSET', key, -1, json)
    return true
  end
  if caller_writes then return json end
  redis.call('HSET', tkey, 'run', json)
  return true
end

-- Outcomes that count toward a task's max_lost_attempts (as AttemptOutcome.lost): its node or its worker
-- process died under it. 'handed back' (a node that stopped gracefully) is not held against the task.
local LOST = {['node lost'] = true, crashed = true}

-- "lost 3 attempts: node-2 crashed (SIGSEGV), node-1 lost, node-3 lost", oldest first, from the attempts
-- the (capped) list still holds.
local function lost_listing(id, count)
  local parts = {}
  for _, a in ipairs(all_attempts(id)) do
    if a.outcome == 'crashed' then
      local how = ''
      if type(a.signal) == 'string' then
        how = ' (' .. a.signal .. ')'
      elseif type(a.exit_code) == 'number' then
        how = string.format(' (exit code %d)', a.exit_code)
      end
      parts[#parts + 1] = a.node .. ' crashed' .. how
    elseif a.outcome == 'node lost' then
      parts[#parts + 1] = a.node .. ' lost'
    end
  end
  local text = string.format('lost %d attempt%s: %s', count, count == 1 and '' or 's', table.concat(parts, ', '))
  if #parts < count then text = text .. string.format(' (and %d not listed)', count - #parts) end
  return text
end

-- Count a lost attempt of a task in ``state`` on ``node``. At the task's max_lost_attempts (``default`` for
-- a task stored without one) the task is quarantined: it ends RUNTIME_ERROR with the list of its lost
-- attempts and is never placed again, so a poison task cannot take node after node down. Returns true then.
local function count_lost(id, state, node, t, default)
  local tkey = P .. 'task:' .. id
  local lost = redis.call('HINCRBY', tkey, 'lost_attempts', 1)
  local most = tonumber(redis.call('HGET', tkey, 'max_lost_attempts')) or tonumber(default)
  if lost < most then return false end
  redis.call('SREM', P .. 'assigned:' .. node, id)
  set_state(id, state, 'RUNTIME_ERROR')
  redis.call('HSET', tkey, 'finished_at', fmt(t), 'error', lost_listing(id, lost))
  publish(id, 'RUNTIME_ERROR', node, t)
  return true
end

-- nil when the caller's epoch is current (or no fencing was asked for), else the current epoch.
local function stale(epoch)
  if epoch == '' then return nil end
  local cur = redis.call('GET', P .. 'epoch') or '0'
  if cur ~= epoch then return cur end
  return nil
end

-- Kill a task that is not terminal: state KILLED, slot freed, a kill order sent to its node if placed.
local function kill_task(id, state, t, reason)
  local tkey = P .. 'task:' .. id
  local got = redis.call('HMGET', tkey, 'node', 'type')
  local node = got[1] or ''
  if state == 'RUNNING' then
    close_attempt(id, 'killed', reason, t)
  end
  if (state == 'INQUEUE' or state == 'RUNNING') and node ~= '' then
    redis.call('SREM', P .. 'assigned:' .. node, id)
    redis.call('XADD', P .. 'inbox:' .. node, '*', 'op', 'kill', 'id', id)
  end
  redis.call('ZREM', P .. 'delayed', id)
  set_state(id, state, 'KILLED')
  redis.call('HSET', tkey, 'finished_at', fmt(t), 'error', reason)
  publish(id, 'KILLED', node, t, got[2] or '')
end

-- Placement, shared by place.lua (the master's batches) and submit.lua (a task placed as it is stored).
-- A node is {name, free, types (set; '*' = any), placed (ids), started (ids)}: free is its slots less what is assigned
-- to it now, and 0 if since the master looked it was declared dead or rejected, or began to leave (it
-- hands back what it holds; a task placed on it after that would wait there for ever).
local function load_node(name, slots, types)
  local set = {}
  for t in string.gmatch(types, '[^,]+') do set[t] = true end
  local free = tonumber(slots) - redis.call('SCARD', P .. 'assigned:' .. name)
  local record = redis.call('HMGET', P .. 'node:' .. name, 'state', 'draining')
  if record[1] == 'dead' or record[1] == 'rejected' or record[2] == '1' then free = 0 end
  return {name = name, free = free, types = set, placed = {}, started = {}}
end

-- The node with the most free slots that runs ``ttype`` (its index in ``nodes``; nil when none has room),
-- among the indexes ``allowed`` holds when it is given (the nodes whose labels a task requires); the node
-- named ``near`` whenever it is one with room (a submit that waits on that node, which runs it: see submit.lua).
local function best_for(nodes, ttype, allowed, near)
  local best
  for k, node in ipairs(nodes) do
    if node.free > 0 and (node.types['*'] or node.types[ttype]) and (not allowed or allowed[k]) then
      if node.name == near then return k end
      if not best or node.free > nodes[best].free then best = k end
    end
  end
  return best
end

-- Count a task as placed on ``node`` (its hash written by the caller: state INQUEUE, node, epoch), moving it
-- out of the index of state ``from`` (nil for a task stored in this script); ``ttype``: the task's type.
-- ``started``: the task was started there too (its hash RUNNING with its first attempt open; submit.lua), and
-- needs no run order.
local function placed_on(node, id, seq, from, t, ttype, started)
  move_later(id, seq, from, started and 'RUNNING' or 'INQUEUE')
  publish(id, 'INQUEUE', node.name, t, ttype)
  if started then
    node.started[#node.started + 1] = id
    publish(id, 'RUNNING', node.name, t, ttype)
  else
    node.placed[#node.placed + 1] = id
  end
  node.free = node.free - 1
end

-- One run order per node for every task placed on it here and not started.
local function send_orders(nodes)
  for _, node in ipairs(nodes) do
    variadic('SADD', P .. 'assigned:' .. node.name, node.started)
    if #node.placed > 0 then
      variadic('SADD', P .. 'assigned:' .. node.name, node.placed)
      redis.call('XADD', P .. 'inbox:' .. node.name, '*', 'op', 'run', 'ids', table.concat(node.placed, ','))
    end
  end
end

-- Workflows: a task that names parents (depends_on) keeps their ids in 'deps', how many of them have not
-- ended in 'left', and is WAITING in no queue while 'left' is above 0; each parent keeps its children's ids in
-- children:{id}, and is in the set 'parents' until it has ended. When a parent ends (every terminal
-- transition lands in ENDED, once), settle_children, which scripts.py runs after every script, settles its
-- waiting children in the same step: a parent that
-- SUCCEEDED (or any end, for a child with on_parent_failure 'run' in 'opf') counts down 'left', and at 0 the
-- child is queued as a due delayed task is; any other end kills the child, whose own end then settles its
-- children in turn (the loop runs until ENDED stops growing). A report taken twice ends a task once, so a
-- child is released once.
local SETTLED = 0

-- Why a child is killed for a parent that ended ``state`` (its error, when it has one, said after).
local function parent_ended(id, state, err)
  local reason = 'parent ' .. id .. ' ended ' .. state
  if err and err ~= '' then reason = reason .. ': ' .. string.sub(err, 1, 200) end
  return reason
end

-- Queue a child whose last parent has ended: in the pending stream of its type, or in 'delayed' while a
-- run_at or delay_s of its own is still ahead.
local function release_child(id, ttype, due, t)
  local d = tonumber(due)
  if d and d > t then
    redis.call('ZADD', P .. 'delayed', d, id)
  else
    if due then redis.call('HDEL', P .. 'task:' .. id, 'due') end
    enqueue(id, ttype)
  end
end

-- Settle the waiting children of task ``id``, which ended ``state`` (with error ``err``).
local function settle(id, state, err, t)
  redis.call('SREM', P .. 'parents', id)  -- settled once: it ends once
  for _, kid in ipairs(redis.call('SMEMBERS', P .. 'children:' .. id)) do
    local ckey = P .. 'task:' .. kid
    local c = redis.call('HMGET', ckey, 'state', 'left', 'opf', 'type', 'due')
    if c[1] == 'WAITING' and (tonumber(c[2]) or 0) > 0 then
      if state == 'SUCCEED' or c[3] == 'run' then
        if redis.call('HINCRBY', ckey, 'left', -1) <= 0 then
          release_child(kid, c[4], c[5], t)
          publish(kid, 'WAITING', '', t, c[4])
        end
      else
        kill_task(kid, 'WAITING', t, parent_ended(id, state, err))
      end
    end
  end
end

-- One SMISMEMBER of 'parents' (the tasks with waiting children) for the tasks that ended, not a look per task:
-- most tasks have no children, and a batch of reports ends many at once.
local function settle_children()
  local t
  while SETTLED < #ENDED do
    local ids = {}
    for i = SETTLED + 1, math.min(#ENDED, SETTLED + 4000) do ids[#ids + 1] = ENDED[i][1] end
    SETTLED = SETTLED + #ids
    local has = redis.call('SMISMEMBER', P .. 'parents', unpack(ids))
    for k, id in ipairs(ids) do
      if has[k] == 1 then
        local f = redis.call('HMGET', P .. 'task:' .. id, 'state', 'error')
        t = t or now()
        if f[1] then settle(id, f[1], f[2], t) end
      end
    end
  end
end
