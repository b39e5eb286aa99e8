-- The master's first step of firing tick T of a schedule, fenced by its epoch: say whether to fire it.
-- 'done': T is handled already (last_tick >= T) or before the schedule's start ('since'); 'fire': store T's
-- task, with '1' when T was missed (older than the grace) and is fired as catch_up 'run_once' does (an
-- earlier fire of T that stored its task and died is answered 'fire' too, so it is recorded as run);
-- 'skipped' (recorded in the runs, last_tick moved to T): T was missed and catch_up is 'skip', or overlap is
-- 'skip' and the task of the run before has not ended.
-- ARGV: prefix, epoch, name, tick (whole Unix seconds), T's task id, grace (s), runs kept, when the master
-- looked for due ticks (the store's clock; '' = now): T is missed if it was older than the grace then, so that
-- a master firing many schedules at one tick does not count its own work against the last of them.
-- Returns {'stale', epoch}, {'gone'}, {'paused'}, {'done'}, {'fire', '1' or ''} or {'skipped', why}.
local cur = stale(ARGV[2])
if cur then return {'stale', cur} end
local key = P .. 'schedule:' .. ARGV[3]
local s = redis.call('HMGET', key, 'since', 'last_tick', 'paused', 'catch_up', 'overlap', 'last_task')
if not s[1] then return {'gone'} end
if s[3] == '1' then return {'paused'} end
local tick = tonumber(ARGV[4])
if tick <= tonumber(s[1]) or (s[2] and tick <= tonumber(s[2])) then return {'done'} end
local looked = ARGV[8] ~= '' and tonumber(ARGV[8]) or now()
local missed = looked - tick > tonumber(ARGV[6])
local late = (missed and s[4] == 'run_once') and '1' or ''
if redis.call('EXISTS', P .. 'task:' .. ARGV[5]) == 1 then return {'fire', late} end
local why
if missed and s[4] ~= 'run_once' then
  why = 'missed'
elseif s[5] == 'skip' and s[6] then
  local state = redis.call('HGET', P .. 'task:' .. s[6], 'state')
  if state == 'WAITING' or state == 'INQUEUE' or state == 'RUNNING' then why = 'overlap' end
end
if not why then return {'fire', late} end
redis.call('HSET', key, 'last_tick', ARGV[4])
local runs = P .. 'schedule-runs:' .. ARGV[3]
redis.call('RPUSH', runs, cjson.encode({tick = ARGV[4], skipped = why}))
redis.call('LTRIM', runs, -tonumber(ARGV[7]), -1)
return {'skipped', why}
