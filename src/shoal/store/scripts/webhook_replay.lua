-- Send deliveries of a subscription again: one (by id), or every one of an event at or after a time. Each is
-- made pending and due at once, with a new retry window from now; the one being sent now is left to that
-- attempt. The body stays the first attempt's, under the same webhook-id.
-- ARGV: prefix, webhook id, 'one' or 'since', delivery id or time.
-- Returns {'ok', replayed ids...}, {'gone'} (no such subscription) or {'missing'} (no such delivery of it).
local wid = ARGV[2]
if redis.call('EXISTS', P .. 'webhook:' .. wid) == 0 then return {'gone'} end
local log = P .. 'deliveries:' .. wid
local ids
if ARGV[3] == 'one' then
  if not redis.call('ZSCORE', log, ARGV[4]) then return {'missing'} end
  ids = {ARGV[4]}
else
  ids = redis.call('ZRANGEBYSCORE', log, ARGV[4], '+inf')
end
local t = now()
local out = {'ok'}
for _, d in ipairs(ids) do
  local dkey = P .. 'delivery:' .. d
  if redis.call('EXISTS', dkey) == 1 then
    if not redis.call('ZSCORE', P .. 'webhook-leases', d) then
      redis.call('HSET', dkey, 'status', 'pending', 'first_at', fmt(t), 'next_at', fmt(t))
      redis.call('HINCRBY', dkey, 'replays', 1)
      redis.call('ZADD', P .. 'webhook-due', t, d)
    end
    out[#out + 1] = d
  end
end
return out
