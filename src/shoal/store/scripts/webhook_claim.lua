-- Lease due webhook deliveries to a node: each moves from 'webhook-due' to 'webhook-leases' with the time its
-- lease lapses, and gets a lease token (node:count) that its outcome must bring back (webhook_done.lua). A lease
-- that lapsed (its node died or hung) makes its delivery due again first, so another node sends it.
-- ARGV: prefix, node, most deliveries, lease seconds.
-- Returns {now, next due time ('' = none), JSON of each delivery leased...}.
local node, most, lease = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local due, leases = P .. 'webhook-due', P .. 'webhook-leases'
local t = now()
for _, d in ipairs(redis.call('ZRANGEBYSCORE', leases, '-inf', fmt(t), 'LIMIT', 0, 1000)) do
  redis.call('ZREM', leases, d)
  if redis.call('HGET', P .. 'delivery:' .. d, 'status') == 'pending' then
    redis.call('ZADD', due, t, d)
    redis.call('HSET', P .. 'delivery:' .. d, 'lease', '')
  end
end
local out = {fmt(t), ''}
if most > 0 then
  for _, d in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', fmt(t), 'LIMIT', 0, most)) do
    redis.call('ZREM', due, d)
    local dkey = P .. 'delivery:' .. d
    local f = redis.call('HMGET', dkey, 'webhook', 'task', 'state', 'type', 'at', 'body', 'attempts', 'first_at')
    local w = f[1] and redis.call('HMGET', P .. 'webhook:' .. f[1], 'url', 'secret', 'include_result') or {}
    if not w[1] then
      redis.call('DEL', dkey)  -- its subscription is gone
    else
      local token = node .. ':' .. redis.call('HINCRBY', dkey, 'leases', 1)
      redis.call('HSET', dkey, 'lease', token)
      redis.call('ZADD', leases, t + lease, d)
      out[#out + 1] = cjson.encode({id = d, webhook = f[1], task = f[2], state = f[3], type = f[4] or '',
        at = tonumber(f[5]) or t, body = f[6] or '', attempts = tonumber(f[7]) or 0, first_at = f[8] or '',
        url = w[1], secret = w[2], include_result = w[3] == '1', lease = token})
    end
  end
end
local nxt = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
if nxt[2] then out[2] = nxt[2] end
return out
