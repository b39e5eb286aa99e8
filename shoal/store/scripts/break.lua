-- Free the master lease of a master known to be gone (its port refused a connection), so the next in
-- line need not wait for the lease to run out. ARGV: prefix, holder it must still be. Returns 1 or 0.
if redis.call('GET', P .. 'lease') == ARGV[2] then
  redis.call('DEL', P .. 'lease')
  return 1
end
return 0
