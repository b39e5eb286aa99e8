-- Add a webhook subscription (store/webhooks.py), unless the cluster holds its most. Events before now are
-- not delivered to it ('created_at'). Makes the consumer group through which every node reads the task
-- events into deliveries, if it is not there yet: from the stream's end, since no subscription wants older.
-- ARGV: prefix, id, most subscriptions, url, events (comma list), types (comma list, '' = any),
-- include_result ('1' or ''), secret, events stream, group.
-- Returns {'ok', created_at}, {'exists'} or {'full', count}.
local key = P .. 'webhook:' .. ARGV[2]
if redis.call('EXISTS', key) == 1 then return {'exists'} end
local count = redis.call('ZCARD', P .. 'webhooks')
if count >= tonumber(ARGV[3]) then return {'full', count} end
local t = now()
redis.call('HSET', key, 'url', ARGV[4], 'events', ARGV[5], 'types', ARGV[6], 'include_result', ARGV[7],
  'secret', ARGV[8], 'created_at', fmt(t))
redis.call('ZADD', P .. 'webhooks', t, ARGV[2])
redis.pcall('XGROUP', 'CREATE', ARGV[9], ARGV[10], '$', 'MKSTREAM')  -- BUSYGROUP: it exists already
return {'ok', fmt(t)}
