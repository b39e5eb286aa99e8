-- Hand back tasks placed on a node that no longer runs them: each goes back to WAITING and to the pending
-- stream of its type, its open attempt closed with the outcome given: 'node lost' (the node died, restarted, or lost
-- track of it) or 'handed back' (the node stopped gracefully). Two uses:
--   * every task of the node (it restarted, stopped, or was declared dead): the node's assigned set and
--     inbox are dropped with them, so that a returning node cannot run what was re-placed elsewhere;
--   * only the ids given (the node found them placed on it but neither running nor ordered: their run
--     order or a state change was lost). An id no longer INQUEUE or RUNNING on the node is only taken out
--     of its assigned set (a left-over member would hold a slot for ever).
-- A lost attempt counts toward the task's max_lost_attempts: at that count the task is quarantined
-- (RUNTIME_ERROR, never placed again) instead of handed back (count_lost in _lib.lua).
-- ARGV: prefix, epoch ('' when the node hands back its own work), node, reason, outcome, max_lost_attempts
-- for tasks stored without one, then optional task ids.
-- Returns {'stale', current_epoch} or {'ok', n, id1, id2, ...}: the first n ids went back to WAITING, the
-- others were quarantined.
local cur = stale(ARGV[2])
if cur then return {'stale', cur} end
local node, reason, outcome = ARGV[3], ARGV[4], ARGV[5]
local akey = P .. 'assigned:' .. node
local ids = {}
for k = 7, #ARGV do ids[#ids + 1] = ARGV[k] end
local whole = #ids == 0
if whole then ids = redis.call('SMEMBERS', akey) end
local t = now()
local back, quarantined = {}, {}
for _, id in ipairs(ids) do
  local tkey = P .. 'task:' .. id
  local state = redis.call('HGET', tkey, 'state')
  if (state == 'INQUEUE' or state == 'RUNNING') and redis.call('HGET', tkey, 'node') == node then
    local closed = state == 'RUNNING' and close_attempt(id, outcome, reason, t)
    if closed and LOST[outcome] and count_lost(id, state, node, t, ARGV[6]) then
      quarantined[#quarantined + 1] = id
    else
      set_state(id, state, 'WAITING')
      redis.call('HSET', tkey, 'node', '')
      enqueue(id, redis.call('HGET', tkey, 'type'))
      publish(id, 'WAITING', '', t)
      back[#back + 1] = id
    end
  end
  if not whole then redis.call('SREM', akey, id) end
end
if whole then redis.call('DEL', akey, P .. 'inbox:' .. node) end
local out = {'ok', #back}
for _, id in ipairs(back) do out[#out + 1] = id end
for _, id in ipairs(quarantined) do out[#out + 1] = id end
return out
