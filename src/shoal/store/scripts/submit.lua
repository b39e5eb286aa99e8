-- Store new tasks, all or nothing, in one step however many. A task goes straight to a node when the
-- master's roster (roster.lua) is current, a node on it that runs the task's type has a free slot, and no
-- older task of that type waits in its pending stream (so none is overtaken); otherwise it is WAITING,
-- queued in that stream for the master to place. A task due later (run_at, delay_s) is WAITING in 'delayed'
-- until then, as a retry waiting out its backoff is; the master queues it when it is due (promote.lua).
-- A task with an idempotency key whose earlier task ('idem:{key}', kept for the idempotency window) still
-- exists is not stored again: the reply names that task instead.
-- ARGV: prefix, count, idempotency window (ms), then per task: id, name, type, target, params (JSON), timeout_s
-- ('' = none), max_retries, max_lost_attempts, memory_mb ('' = none), cpu_s_limit ('' = none), result_ttl
-- ('' = the retention's; else seconds the task is kept once it has ended), run_at ('' = none; Unix seconds),
-- delay_s ('' = none), idempotency key ('' = none), priority ('' = the default), required labels (JSON; '' =
-- none), concurrency key ('' = none), host (a fetch's; '' = none), schedule ('' = none), tick ('' = none),
-- '1' if the id was given (a schedule's tick: a task of that id already stored is answered instead), a function
-- task's args (JSON array; '' = none) and kwargs (JSON object; '' = none), the node that submits it and
-- waits for its end there ('' = none), and how long that node has run it already, in seconds ('' = it has not).
-- A task waited for on a node that runs tasks goes to that node whenever it has room, and is started there in
-- the same step (RUNNING, its first attempt open, no run order): the node runs it as it has the reply, and
-- its end comes back to the wait with the report (a round trip one task at a time is two calls to the store).
-- A task its node ran before storing it (submit_finish, when it ended at once, or one that runs on) is stored
-- started there whatever room the roster gives, created and started when the node began it; unless the master
-- has declared that node dead or rejected it (its work is handed back, so a task stored there would never be
-- reported): then nothing is stored and the reply is {'refused', index of the task (0-based), the node's state}.
-- A task with required labels, a concurrency key or a host is never placed here: the master places it,
-- where its labels and limits are checked.
-- Returns: the creation time, then per task its sequence number, the node it was placed on ('' = none) and
-- the id of the earlier task of its idempotency key ('' = stored now; then the other two are '').
-- its events go out on the progress channel unless one ends a task, or a step beside it says not (_lib.lua)
if PROGRESS == nil then PROGRESS = true end
local t = now()
local n, window = tonumber(ARGV[2]), ARGV[3]

-- Workflows (settle_children in _lib.lua). After every task's arguments come, per task, its parents' ids
-- (comma-separated; '' = none) and its on_parent_failure ('run'; '' = kill), then '1' when the tasks form a
-- workflow (they name parents or refs): all of them and their parents stored before then share a workflow
-- id ('wf'; members in wf:{id}), the one of such a parent that has one already, else this call's first
-- task's id. A parent is a task of this call or a stored one: a call naming one that is neither stores
-- nothing and returns {'missing', index of the task naming it (0-based), parent id}.
local W = #ARGV - 2 * n  -- the first workflow argument
local stride = (W - 4) / n
local workflow = false  -- the workflow id; nil: to be found below
if ARGV[#ARGV] == '1' then workflow = nil end
local here, alias, parents = {}, {}, {}  -- ids of this call -> index; reused id -> earlier task; per task
for i = 0, n - 1 do
  local b = 4 + i * stride
  local id, key = ARGV[b], ARGV[b + 13]
  if ARGV[b + 24] ~= '' then
    local state = redis.call('HGET', P .. 'node:' .. ARGV[b + 23], 'state')
    if state == 'dead' or state == 'rejected' then return {'refused', i, state} end
  end
  here[id] = i
  local prior = key ~= '' and redis.call('GET', P .. 'idem:' .. key)
  if ARGV[b + 20] == '1' and redis.call('EXISTS', P .. 'task:' .. id) == 1 then prior = id end
  if prior and prior ~= id and redis.call('EXISTS', P .. 'task:' .. prior) == 1 then alias[id] = prior end
end
for i = 0, n - 1 do
  local list = {}
  for p in string.gmatch(ARGV[W + 2 * i], '[^,]+') do
    if not here[p] and redis.call('EXISTS', P .. 'task:' .. p) == 0 then return {'missing', i, p} end
    list[#list + 1] = alias[p] or p
  end
  parents[i] = list
end
if workflow == nil then
  local outside = {}  -- stored parents, and earlier tasks answered for this call's
  for i = 0, n - 1 do
    for _, p in ipairs(parents[i]) do if not here[p] then outside[#outside + 1] = p end end
  end
  for _, prior in pairs(alias) do outside[#outside + 1] = prior end
  for _, p in ipairs(outside) do
    workflow = workflow or redis.call('HGET', P .. 'task:' .. p, 'wf')
  end
  workflow = workflow or alias[ARGV[4]] or ARGV[4]
  for _, p in ipairs(outside) do
    if not redis.call('HGET', P .. 'task:' .. p, 'wf') then
      redis.call('HSET', P .. 'task:' .. p, 'wf', workflow)
      redis.call('SADD', P .. 'wf:' .. workflow, p)
    end
  end
end

-- What a task's parents say as it is stored: {list, opf, left (parents not ended yet), killed (the reason, when
-- one ended otherwise than SUCCEED and the task does not run anyway)}; nil for a task with none. It is added to
-- the children of each parent not ended yet (one later in this call included).
local function dependence(id)
  local i = here[id]
  local list = parents[i]
  if #list == 0 and not workflow then return nil end
  local dep = {list = list, opf = ARGV[W + 2 * i + 1], left = 0}
  for _, p in ipairs(list) do
    local f = redis.call('HMGET', P .. 'task:' .. p, 'state', 'error')
    if f[1] == 'SUCCEED' or (TERMINAL[f[1]] and dep.opf == 'run') then
      -- ended as it needs: counted done
    elseif TERMINAL[f[1]] then
      dep.killed = dep.killed or parent_ended(p, f[1], f[2])
    else
      redis.call('SADD', P .. 'children:' .. p, id)
      redis.call('SADD', P .. 'parents', p)
      dep.left = dep.left + 1
    end
  end
  if dep.killed then dep.left = 0 end
  return dep
end

-- The workflow fields of a task with parents (or in a workflow), added to ``fields``.
local function dependence_fields(fields, dep)
  local function add(name, value)
    fields[#fields + 1] = name
    fields[#fields + 1] = value
  end
  if #dep.list > 0 then add('deps', table.concat(dep.list, ',')) end
  if dep.opf ~= '' then add('opf', dep.opf) end
  if dep.left > 0 then add('left', dep.left) end
  if workflow then add('wf', workflow) end
end

local first = redis.call('INCRBY', P .. 'seq', n) - n + 1
local out = {fmt(t)}
local names = {}  -- ZADD arguments of the name index

local roster, skip, epoch = nil, {}, nil
local raw = redis.call('GET', P .. 'roster')
if raw then
  roster = cjson.decode(raw)
  if not stale(roster.epoch) then
    epoch = roster.epoch
    for _, ttype in ipairs(roster.skip) do skip[ttype] = true end
  end
end
local queued = {}  -- type -> whether its tasks go to the pending stream (some wait there already)
local function queues(ttype)
  if queued[ttype] == nil then
    queued[ttype] = not epoch or skip[ttype] or redis.call('XLEN', P .. 'pending:' .. ttype) > 0
  end
  return queued[ttype]
end
local nodes  -- the roster's nodes with their free slots, read once some task may be placed
local function placeable()
  if not nodes then
    nodes = {}
    for k, r in ipairs(epoch and roster.nodes or {}) do nodes[k] = load_node(r[1], r[2], r[3]) end
  end
  return nodes
end
-- The node a task already runs on: the roster's entry for it, else one added for the orders (send_orders).
local function running_on(name)
  for _, node in ipairs(placeable()) do
    if node.name == name then return node end
  end
  nodes[#nodes + 1] = {name = name, free = 0, types = {}, placed = {}, started = {}}
  return nodes[#nodes]
end

-- Store one task, its arguments from ARGV[b] on; adds its sequence number and node to the reply.
local function store_task(b, id, ttype, seq)
  local dep = dependence(id)
  local held = dep and (dep.left > 0 or dep.killed)  -- parents not ended, or one that ended otherwise
  local due = tonumber(ARGV[b + 11])
  if ARGV[b + 12] ~= '' then due = math.max(due or 0, t + tonumber(ARGV[b + 12])) end  -- both: the later
  local later = due and due > t
  local limited = ARGV[b + 15] ~= '' or ARGV[b + 16] ~= '' or ARGV[b + 17] ~= ''
  local ran = tonumber(ARGV[b + 24])
  local at = t - (ran or 0)  -- when it was taken: for one that ran already, when its node began it
  local best = not ran and not later and not held and not limited and not queues(ttype)
    and best_for(placeable(), ttype, nil, ARGV[b + 23])
  local node = (ran and running_on(ARGV[b + 23])) or (best and nodes[best])
  local starts = node and node.name == ARGV[b + 23]
  local state = (starts and 'RUNNING') or (node and 'INQUEUE') or (held and dep.killed and 'KILLED') or 'WAITING'
  local fields = {
    'name', ARGV[b + 1], 'type', ttype, 'target', ARGV[b + 3], 'max_retries', ARGV[b + 6],
    'max_lost_attempts', ARGV[b + 7], 'state', state, 'node', node and node.name or '',
    'attempts', starts and 1 or 0, 'created_at', fmt(at), 'seq', seq}
  -- What a task does not ask for is not written (the id is in the key): a small hash stays small.
  local function unless(value, none, name)
    if value ~= none then
      fields[#fields + 1] = name
      fields[#fields + 1] = value
    end
  end
  unless(ARGV[b + 4], '{}', 'params')
  unless(ARGV[b + 5], '', 'timeout_s')
  unless(ARGV[b + 8], '', 'memory_mb')
  unless(ARGV[b + 9], '', 'cpu_s_limit')
  unless(ARGV[b + 10], '', 'result_ttl')
  if node then unless(epoch, nil, 'epoch') end
  if starts then  -- its first attempt, as start.lua opens one
    unless(fmt(at), nil, 'started_at')
    unless(cjson.encode({number = 1, node = node.name, epoch = tonumber(epoch)}), nil, 'run')
  end
  if due then unless(fmt(due), nil, 'run_at') end
  unless(ARGV[b + 12], '', 'delay_s')
  if later then unless(fmt(due), nil, 'due') end
  unless(ARGV[b + 13], '', 'idem')
  unless(ARGV[b + 14], '', 'prio')
  unless(ARGV[b + 15], '', 'req')
  unless(ARGV[b + 16], '', 'ckey')
  unless(ARGV[b + 17], '', 'host')
  unless(ARGV[b + 18], '', 'schedule')
  unless(ARGV[b + 19], '', 'tick')
  unless(ARGV[b + 21], '', 'args')
  unless(ARGV[b + 22], '', 'kwargs')
  if dep then
    dependence_fields(fields, dep)
    if workflow then redis.call('SADD', P .. 'wf:' .. workflow, id) end
  end
  redis.call('HSET', P .. 'task:' .. id, unpack(fields))
  names[#names + 1] = 0
  names[#names + 1] = name_entry(ARGV[b + 1], seq, id)
  publish(id, 'WAITING', '', at, ttype)
  out[#out + 1] = seq
  if node then
    placed_on(node, id, seq, nil, at, ttype, starts)
    out[#out + 1] = node.name
  elseif held and dep.killed then  -- a parent ended otherwise already: it ends at once
    redis.call('HSET', P .. 'task:' .. id, 'finished_at', fmt(t), 'error', dep.killed)
    move_later(id, seq, nil, 'KILLED', ARGV[b + 10])
    publish(id, 'KILLED', '', t, ttype)
    out[#out + 1] = ''
  elseif held then  -- in no queue until its last parent ends (indexed now: it may be killed in this step)
    redis.call('ZADD', P .. 'index:WAITING', seq, id)
    out[#out + 1] = ''
  elseif later then
    move_later(id, seq, nil, 'WAITING')
    redis.call('ZADD', P .. 'delayed', due, id)
    out[#out + 1] = ''
  else
    queued[ttype] = true  -- the rest of its type in this batch queue behind it
    move_later(id, seq, nil, 'WAITING')
    enqueue(id, ttype, {ARGV[b + 14], ARGV[b + 15], ARGV[b + 16], ARGV[b + 17]})
    out[#out + 1] = ''
  end
end

for i = 0, n - 1 do
  local b = 4 + i * stride
  local id, key = ARGV[b], ARGV[b + 13]
  local prior = key ~= '' and redis.call('GET', P .. 'idem:' .. key)
  if ARGV[b + 20] == '1' and redis.call('EXISTS', P .. 'task:' .. id) == 1 then prior = id end
  if prior and redis.call('EXISTS', P .. 'task:' .. prior) == 1 then
    out[#out + 1] = ''
    out[#out + 1] = ''
    out[#out + 1] = prior
  else
    if key ~= '' then redis.call('SET', P .. 'idem:' .. key, id, 'PX', window) end
    store_task(b, id, ARGV[b + 2], first + i)
    out[#out + 1] = ''
  end
end
variadic('ZADD', P .. 'names', names)
if nodes then send_orders(nodes) end
return out
