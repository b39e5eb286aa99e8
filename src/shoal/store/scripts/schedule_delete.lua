-- Delete a schedule and its list of runs; the tasks it fired stay.
-- ARGV: prefix, name. Returns {'ok'} or {'gone'}.
local key = P .. 'schedule:' .. ARGV[2]
if redis.call('EXISTS', key) == 0 then return {'gone'} end
redis.call('DEL', key, P .. 'schedule-runs:' .. ARGV[2])
redis.call('ZREM', P .. 'schedules', ARGV[2])
redis.call('INCR', P .. 'schedules-version')
return {'ok'}
