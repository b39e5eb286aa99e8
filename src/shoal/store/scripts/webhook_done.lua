-- Record the outcome of one attempt of a webhook delivery, if the caller still holds its lease (a node whose
-- lease lapsed while it sent finds it 'stale': the delivery is another node's now, which sends it again).
-- Delivered on success; on failure due again after the caller's backoff, unless that is past the retry window
-- counted from the first attempt: then failed. The attempt goes to the delivery's own log (the latest kept).
-- ARGV: prefix, delivery id, lease token, 'ok' or 'fail', status code ('' = no answer), latency ms,
-- response snippet, error, node, retry delay s, retry window s, attempts kept, body (the JSON sent; kept by
-- the first attempt so that every retry and replay sends the same).
-- Returns {'delivered'|'pending'|'failed', next attempt time ('' = none)}, {'stale'} or {'gone'}.
local d = ARGV[2]
local dkey = P .. 'delivery:' .. d
local f = redis.call('HMGET', dkey, 'lease', 'first_at', 'attempts', 'webhook', 'log', 'body')
if not f[4] then return {'gone'} end
if f[1] ~= ARGV[3] then return {'stale'} end
redis.call('ZREM', P .. 'webhook-leases', d)
local t = now()
local first = tonumber(f[2]) or t
local attempt = {at = t, status_code = tonumber(ARGV[5]) or cjson.null, latency_ms = tonumber(ARGV[6]),
  response = ARGV[7], error = ARGV[8], node = ARGV[9]}
local log = {}
if f[5] and f[5] ~= '' then log = cjson.decode(f[5]) end
log[#log + 1] = attempt
local kept = tonumber(ARGV[12])
while #log > kept do table.remove(log, 1) end
local status, nxt = 'delivered', ''
if ARGV[4] ~= 'ok' then
  local at = t + tonumber(ARGV[10])
  if at - first > tonumber(ARGV[11]) then
    status = 'failed'
  else
    status, nxt = 'pending', fmt(at)
    redis.call('ZADD', P .. 'webhook-due', at, d)
  end
end
redis.call('HSET', dkey, 'status', status, 'attempts', (tonumber(f[3]) or 0) + 1, 'first_at', fmt(first),
  'next_at', nxt, 'log', cjson.encode(log), 'lease', '')
if (not f[6] or f[6] == '') and ARGV[13] ~= '' then redis.call('HSET', dkey, 'body', ARGV[13]) end
return {status, nxt}
