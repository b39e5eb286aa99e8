-- Kill every unfinished task of a workflow (their children among them, and through settle_children any
-- task outside it that waits for one of them). ARGV: prefix, workflow id, reason.
-- Returns {'gone'} when the store keeps no task of it, else {'ok', previous state, id, ...} per task killed.
local members = redis.call('SMEMBERS', P .. 'wf:' .. ARGV[2])
if #members == 0 then return {'gone'} end
local t = now()
local out = {'ok'}
for _, id in ipairs(members) do
  local state = redis.call('HGET', P .. 'task:' .. id, 'state')
  if state and not TERMINAL[state] then
    kill_task(id, state, t, ARGV[3])
    out[#out + 1] = state
    out[#out + 1] = id
  end
end
return out
