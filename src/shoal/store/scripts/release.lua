-- Give up the master lease at once, if this node still holds it, naming who should take it next.
-- ARGV: prefix, node, candidate ('' = the next in line), ttl of the handover note in ms, and optionally why
-- the master steps down with the epoch of its term, written on the membership timeline. Returns 1 or 0.
-- The note is written only by a master of the current term: one that finds its term over (another master
-- took the lease while it was paused or cut off) writes nothing more under its old epoch.
if ARGV[5] and ARGV[5] ~= '' and not stale(ARGV[6] or '0') then
  timeline('stepped down', ARGV[2], ARGV[5], ARGV[6] or '0', '{}')
end
if redis.call('GET', P .. 'lease') == ARGV[2] then
  redis.call('DEL', P .. 'lease')
  if ARGV[3] ~= '' then
    redis.call('SET', P .. 'handover', ARGV[3], 'PX', ARGV[4])
  end
  local request = cjson.encode({kind = 1, who = ARGV[2], candidate = ARGV[3]})
  redis.call('PUBLISH', PUBLIC_CHANNEL, request)
  redis.call('PUBLISH', ELECTIONS_CHANNEL, request)
  return 1
end
return 0
