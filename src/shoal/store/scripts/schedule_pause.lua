-- Pause a schedule ('1') or resume it (''). A resumed schedule fires the ticks after now only: those it
-- missed while paused are not caught up ('since' moves to now). Either is a no-op if already so.
-- ARGV: prefix, name, '1' to pause or '' to resume. Returns {'ok'} or {'gone'}.
local key = P .. 'schedule:' .. ARGV[2]
if redis.call('EXISTS', key) == 0 then return {'gone'} end
local paused = redis.call('HGET', key, 'paused') == '1'
if ARGV[3] == '1' and not paused then
  redis.call('HSET', key, 'paused', '1')
elseif ARGV[3] ~= '1' and paused then
  redis.call('HDEL', key, 'paused')
  redis.call('HSET', key, 'since', fmt(now()))
else
  return {'ok'}
end
redis.call('INCR', P .. 'schedules-version')
return {'ok'}
