-- The newest tasks of several state indexes merged, below a sequence number: a page of the listing of all
-- tasks, which no index holds (each task is in its state's index only), or a chunk of a search over them.
-- ARGV: prefix, top ('+inf' or '(N': below N), how many, then the states. Returns {total in those indexes,
-- id, seq, id, seq, ...}, newest first, at most ``how many``.
local top, count = ARGV[2], tonumber(ARGV[3])
local rows, total = {}, 0
for k = 4, #ARGV do
  local index = P .. 'index:' .. ARGV[k]
  total = total + redis.call('ZCARD', index)
  local got = redis.call('ZREVRANGEBYSCORE', index, top, '-inf', 'WITHSCORES', 'LIMIT', 0, count)
  for i = 1, #got, 2 do rows[#rows + 1] = {got[i], tonumber(got[i + 1])} end
end
table.sort(rows, function(a, b) return a[2] > b[2] end)
local out = {total}
for i = 1, math.min(count, #rows) do
  out[#out + 1] = rows[i][1]
  out[#out + 1] = rows[i][2]
end
return out
