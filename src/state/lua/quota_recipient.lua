-- ARGV: id, lease ms, the user's max recipients/hour and /day, then the domain's
-- (with the domain's keys).
-- Returns {1} or {0, limit, max, retry after seconds[, 'domain']}. A reservation
-- whose lease ran out (a transaction slower than the lease) is taken up again.
local id, lease_ms = ARGV[1], tonumber(ARGV[2])
for _, k in ipairs(PARTIES) do
  expire_leases(k)
  if not redis.call('HGET', k[1], id) then
    redis.call('HSET', k[1], id, 0)
    redis.call('HINCRBY', k[1], '#m', 1)
  end
end
local refused = check_rcpt(U, tonumber(ARGV[3]), tonumber(ARGV[4]), 1)
if not refused and D then
  refused = of_domain(check_rcpt(D, tonumber(ARGV[5]), tonumber(ARGV[6]), 1))
end
for _, k in ipairs(PARTIES) do hold(k, id, lease_ms) end
if refused then return refused end
hold_rcpts(id, 1)
return {1}
