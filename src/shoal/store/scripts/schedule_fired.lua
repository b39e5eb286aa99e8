-- The master's last step of firing tick T, once T's task is stored, fenced by its epoch: move last_tick to T
-- if it is below T (else another fire of T recorded it: 'done') and add the run.
-- ARGV: prefix, epoch, name, tick (whole Unix seconds), T's task id, runs kept, '1' if T was missed and is
-- fired as a catch-up ('' otherwise).
-- Returns {'stale', epoch}, {'gone'}, {'done'} or {'ok', fired_at}.
local cur = stale(ARGV[2])
if cur then return {'stale', cur} end
local key = P .. 'schedule:' .. ARGV[3]
if redis.call('EXISTS', key) == 0 then return {'gone'} end
local last = redis.call('HGET', key, 'last_tick')
if last and tonumber(last) >= tonumber(ARGV[4]) then return {'done'} end
local t = fmt(now())
redis.call('HSET', key, 'last_tick', ARGV[4], 'last_task', ARGV[5])
local runs = P .. 'schedule-runs:' .. ARGV[3]
local run = {tick = ARGV[4], task_id = ARGV[5], fired_at = t}
if ARGV[7] == '1' then run.catch_up = true end
redis.call('RPUSH', runs, cjson.encode(run))
redis.call('LTRIM', runs, -tonumber(ARGV[6]), -1)
return {'ok', t}
