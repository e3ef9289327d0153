-- A message whose sender domain is known only at the end of DATA (the null
-- sender's header From): KEYS are the domain's only. ARGV: id, lease ms, the
-- domain's max messages/hour, recipients/hour, recipients/day, and the message's
-- recipients, all reserved at once.
-- Returns {1} or {0, limit, max, retry after seconds, 'domain'}.
expire_leases(U)
local id, lease_ms, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[6])
local refused = check_message(U, tonumber(ARGV[3]))
if not refused and n > 0 then
  refused = check_rcpt(U, tonumber(ARGV[4]), tonumber(ARGV[5]), n)
end
if refused then return of_domain(refused) end
redis.call('HSET', U[1], id, n)
redis.call('HINCRBY', U[1], '#m', 1)
redis.call('HINCRBY', U[1], '#r', n)
hold(U, id, lease_ms)
return {1}
