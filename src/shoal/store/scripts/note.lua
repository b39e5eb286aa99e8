-- Add an event that changes no state to the membership timeline (e.g. a dead node's tasks re-placed).
-- ARGV: prefix, kind, node, rule, epoch, extra JSON. Returns the event's time.
return fmt(timeline(ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]))
