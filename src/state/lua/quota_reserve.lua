-- ARGV: id, lease ms, the user's max messages/hour, recipients/hour, recipients/day
-- (-1: no limit), 1 to also reserve one recipient ahead if it fits (the common
-- message has one, and its RCPT then needs no round trip), then the domain's
-- three maxima (with the domain's keys).
-- Returns {1, recipients reserved ahead} or {0, limit, max, retry after seconds[, 'domain']}.
for _, k in ipairs(PARTIES) do expire_leases(k) end
local id, lease_ms = ARGV[1], tonumber(ARGV[2])
local refused = check_message(U, tonumber(ARGV[3]))
if refused then return refused end
if D then
  refused = check_message(D, tonumber(ARGV[7]))
  if refused then return of_domain(refused) end
end
for _, k in ipairs(PARTIES) do
  redis.call('HSET', k[1], id, 0)
  redis.call('HINCRBY', k[1], '#m', 1)
end
local ahead = 0
if ARGV[6] == '1' and not check_rcpt(U, tonumber(ARGV[4]), tonumber(ARGV[5]), 1)
    and not (D and check_rcpt(D, tonumber(ARGV[8]), tonumber(ARGV[9]), 1)) then
  hold_rcpts(id, 1)
  ahead = 1
end
for _, k in ipairs(PARTIES) do hold(k, id, lease_ms) end
return {1, ahead}
