-- Turn task events into webhook deliveries: acknowledge each stream entry in the consumer group and, only
-- if this call was the one to acknowledge it (another node that claimed it may have been first), make one
-- delivery per event and matching subscription, due at once. One atomic step per batch: an entry is either
-- still pending in the group, or acknowledged with all its deliveries made.
-- A subscription matches an event of a state it names, of a type it names (or any type when it names none),
-- that happened after it was made. Each log is then trimmed (trim below).
-- ARGV: prefix, events stream, group, ended deliveries kept per log, most deliveries per log, then pairs of
-- (entry id, JSON array of [task id, state, type, at]).
-- Returns the number of deliveries made.
local stream, group = ARGV[2], ARGV[3]
local keep, most = tonumber(ARGV[4]), tonumber(ARGV[5])
local subs = {}
for _, id in ipairs(redis.call('ZRANGE', P .. 'webhooks', 0, -1)) do
  local f = redis.call('HMGET', P .. 'webhook:' .. id, 'events', 'types', 'created_at')
  if f[1] then
    local s = {id = id, states = {}, types = nil, since = tonumber(f[3]) or 0}
    for state in string.gmatch(f[1], '[^,]+') do s.states[state] = true end
    if f[2] and f[2] ~= '' then
      s.types = {}
      for ttype in string.gmatch(f[2], '[^,]+') do s.types[ttype] = true end
    end
    subs[#subs + 1] = s
  end
end

-- Past ``keep`` entries, drop the oldest ended deliveries of a log; past ``most``, the oldest whatever
-- their status (counted in the subscription's 'dropped'). Looks at a bounded window of the oldest.
local function trim(id)
  local log = P .. 'deliveries:' .. id
  local n = redis.call('ZCARD', log)
  if n <= keep then return end
  local excess = n - keep
  local gone, lost = {}, 0
  for _, d in ipairs(redis.call('ZRANGE', log, 0, math.min(excess + 200, 2000) - 1)) do
    if #gone >= excess then break end
    local status = redis.call('HGET', P .. 'delivery:' .. d, 'status')
    if status ~= 'pending' or n - #gone > most then
      gone[#gone + 1] = d
      if status == 'pending' then lost = lost + 1 end
    end
  end
  for _, d in ipairs(gone) do redis.call('DEL', P .. 'delivery:' .. d) end
  if #gone > 0 then
    variadic('ZREM', log, gone)
    variadic('ZREM', P .. 'webhook-due', gone)
    variadic('ZREM', P .. 'webhook-leases', gone)
  end
  if lost > 0 then redis.call('HINCRBY', P .. 'webhook:' .. id, 'dropped', lost) end
end

local t = now()
local made, touched = 0, {}
for i = 6, #ARGV, 2 do
  if redis.call('XACK', stream, group, ARGV[i]) == 1 and #subs > 0 then
    for _, e in ipairs(cjson.decode(ARGV[i + 1])) do
      local tid, state, ttype = e[1], e[2], e[3]
      local at = tonumber(fmt(tonumber(e[4]) or t))  -- as stored (to the microsecond), so a replay 'since' it finds it
      if type(ttype) ~= 'string' then ttype = '' end
      for _, s in ipairs(subs) do
        if s.states[state] and at >= s.since then
          if s.types and ttype == '' then ttype = redis.call('HGET', P .. 'task:' .. tid, 'type') or '' end
          if not s.types or s.types[ttype] then
            local did = tostring(redis.call('INCR', P .. 'webhook-seq'))
            redis.call('HSET', P .. 'delivery:' .. did, 'webhook', s.id, 'task', tid, 'state', state,
              'type', ttype, 'at', fmt(at), 'created_at', fmt(t), 'status', 'pending', 'attempts', 0,
              'next_at', fmt(t))
            redis.call('ZADD', P .. 'deliveries:' .. s.id, at, did)
            redis.call('ZADD', P .. 'webhook-due', t, did)
            touched[s.id] = true
            made = made + 1
          end
        end
      end
    end
  end
end
for id in pairs(touched) do trim(id) end
return made
