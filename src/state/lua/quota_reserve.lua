-- ARGV: id, lease ms, max messages/hour, max recipients/hour, max recipients/day
-- (-1: no limit), and 1 to also reserve one recipient ahead if it fits (the common
-- message has one, and its RCPT then needs no round trip).
-- Returns {1, recipients reserved ahead} or {0, limit, max, retry after seconds}.
expire_leases()
local id, lease_ms = ARGV[1], tonumber(ARGV[2])
local refused = check(KEYS[3], KEYS[4], 3600, reserved('#m'), tonumber(ARGV[3]), 'messages_per_hour')
if refused then return refused end
redis.call('HSET', KEYS[1], id, 0)
redis.call('HINCRBY', KEYS[1], '#m', 1)
local ahead = 0
if ARGV[6] == '1' and not check_rcpt(tonumber(ARGV[4]), tonumber(ARGV[5])) then
  redis.call('HINCRBY', KEYS[1], id, 1)
  redis.call('HINCRBY', KEYS[1], '#r', 1)
  ahead = 1
end
hold(id, lease_ms)
return {1, ahead}
