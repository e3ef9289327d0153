-- ARGV: id, lease ms, max recipients/hour, max recipients/day.
-- Returns {1} or {0, limit, max, retry after seconds}. A reservation whose lease
-- ran out (a transaction slower than the lease) is taken up again.
expire_leases()
local id, lease_ms = ARGV[1], tonumber(ARGV[2])
if not redis.call('HGET', KEYS[1], id) then
  redis.call('HSET', KEYS[1], id, 0)
  redis.call('HINCRBY', KEYS[1], '#m', 1)
end
local refused = check_rcpt(tonumber(ARGV[3]), tonumber(ARGV[4]))
hold(id, lease_ms)
if refused then return refused end
redis.call('HINCRBY', KEYS[1], id, 1)
redis.call('HINCRBY', KEYS[1], '#r', 1)
return {1}
