-- The master records what it decided about a node (alive, suspect, dead, rejected), fenced by its epoch,
-- and writes the decision with its rule on the membership timeline.
-- ARGV: prefix, epoch, node, state, incarnation the decision is about, reason, extra JSON for the timeline.
-- Returns {'stale', current_epoch}, {'ok', previous_state} or {'same'} when nothing changed.
local cur = stale(ARGV[2])
if cur then return {'stale', cur} end
local key = P .. 'node:' .. ARGV[3]
local before = redis.call('HMGET', key, 'state', 'state_incarnation', 'reason')
if before[1] == ARGV[4] and before[2] == ARGV[5] and before[3] == ARGV[6] then return {'same'} end
local t = timeline(ARGV[4], ARGV[3], ARGV[6], ARGV[2], ARGV[7])
redis.call('HSET', key, 'state', ARGV[4], 'state_incarnation', ARGV[5], 'reason', ARGV[6], 'state_since', fmt(t))
redis.call('INCR', P .. 'membership')
redis.call('PUBLISH', PUBLIC_CHANNEL, cjson.encode({kind = 3, who = ARGV[3], state = ARGV[4], reason = ARGV[6]}))
return {'ok', before[1] or ''}
