-- Delete a webhook subscription with its delivery log, its deliveries and their places in the queue.
-- ARGV: prefix, id. Returns {'ok', deliveries removed} or {'gone'}.
local key = P .. 'webhook:' .. ARGV[2]
if redis.call('EXISTS', key) == 0 then return {'gone'} end
local log = P .. 'deliveries:' .. ARGV[2]
local ids = redis.call('ZRANGE', log, 0, -1)
if #ids > 0 then
  for i = 1, #ids, 500 do
    local hashes = {}
    for k = i, math.min(#ids, i + 499) do hashes[#hashes + 1] = P .. 'delivery:' .. ids[k] end
    redis.call('DEL', unpack(hashes))
  end
  variadic('ZREM', P .. 'webhook-due', ids)
  variadic('ZREM', P .. 'webhook-leases', ids)
end
redis.call('DEL', log, key)
redis.call('ZREM', P .. 'webhooks', ARGV[2])
return {'ok', #ids}
