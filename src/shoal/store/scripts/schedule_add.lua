-- Add a named schedule (store/schedules.py), unless one of that name exists or the cluster holds its most.
-- Its ticks fire from now on: 'since' is now (no backfill of ticks before it was made).
-- ARGV: prefix, name, most schedules, cron, time zone, task template (JSON), catch_up, overlap.
-- Returns {'ok', created_at}, {'exists'} or {'full', count}.
local key = P .. 'schedule:' .. ARGV[2]
if redis.call('EXISTS', key) == 1 then return {'exists'} end
local count = redis.call('ZCARD', P .. 'schedules')
if count >= tonumber(ARGV[3]) then return {'full', count} end
local t = fmt(now())
redis.call('HSET', key, 'cron', ARGV[4], 'timezone', ARGV[5], 'task', ARGV[6], 'catch_up', ARGV[7],
  'overlap', ARGV[8], 'created_at', t, 'since', t)
redis.call('DEL', P .. 'schedule-runs:' .. ARGV[2])
redis.call('ZADD', P .. 'schedules', 0, ARGV[2])
redis.call('INCR', P .. 'schedules-version')
return {'ok', t}
