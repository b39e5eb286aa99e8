-- Free the master lease of a master known to be gone (its port refused a connection), so the next in
-- line need not wait for the lease to run out, and say so on the timeline in the same step: before the
-- election it allows. ARGV: prefix, holder it must still be, the rule that found it gone. Returns 1 or 0.
if redis.call('GET', P .. 'lease') == ARGV[2] then
  redis.call('DEL', P .. 'lease')
  timeline('master lost', ARGV[2], ARGV[3], '0', '{}')
  return 1
end
return 0
