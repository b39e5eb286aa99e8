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
-- and '1' if the id was given (a schedule's tick: a task of that id already stored is answered instead).
-- A task with required labels, a concurrency key or a host is never placed here: the master places it,
-- where its labels and limits are checked.
-- Returns: the creation time, then per task its sequence number, the node it was placed on ('' = none) and
-- the id of the earlier task of its idempotency key ('' = stored now; then the other two are '').
local t = now()
local n, window = tonumber(ARGV[2]), ARGV[3]
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
    for k, r in ipairs(roster.nodes) do nodes[k] = load_node(r[1], r[2], r[3]) end
  end
  return nodes
end

-- Store one task, its arguments from ARGV[b] on; adds its sequence number and node to the reply.
local function store_task(b, id, ttype, seq)
  local due = tonumber(ARGV[b + 11])
  if ARGV[b + 12] ~= '' then due = math.max(due or 0, t + tonumber(ARGV[b + 12])) end  -- both: the later
  local later = due and due > t
  local limited = ARGV[b + 15] ~= '' or ARGV[b + 16] ~= '' or ARGV[b + 17] ~= ''
  local best = not later and not limited and not queues(ttype) and best_for(placeable(), ttype)
  local node = best and nodes[best]
  local fields = {
    'name', ARGV[b + 1], 'type', ttype, 'target', ARGV[b + 3], 'max_retries', ARGV[b + 6],
    'max_lost_attempts', ARGV[b + 7], 'state', node and 'INQUEUE' or 'WAITING', 'node', node and node.name or '',
    'attempts', 0, 'created_at', fmt(t), 'seq', seq}
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
  redis.call('HSET', P .. 'task:' .. id, unpack(fields))
  names[#names + 1] = 0
  names[#names + 1] = name_entry(ARGV[b + 1], seq, id)
  publish(id, 'WAITING', '', t)
  out[#out + 1] = seq
  if node then
    placed_on(node, id, seq, nil, t)
    out[#out + 1] = node.name
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
  local b = 4 + i * 21
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
