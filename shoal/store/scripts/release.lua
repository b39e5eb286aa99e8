-- Give up the master lease at once, if this node still holds it. ARGV: prefix, node. Returns 1 or 0.
if redis.call('GET', P .. 'lease') == ARGV[2] then
  redis.call('DEL', P .. 'lease')
  return 1
end
return 0
