-- ARGV: id, recipients accepted. Counts the message whether or not its
-- reservation is still there (a lease may have run out: the mail went anyway).
expire_leases()
local id = ARGV[1]
local held = redis.call('HGET', KEYS[1], id)
if held then
  redis.call('HINCRBY', KEYS[1], '#m', -1)
  redis.call('HINCRBY', KEYS[1], '#r', 0 - tonumber(held))
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
local rcpts = tonumber(ARGV[2])
add(KEYS[3], KEYS[4], 3600, 1)
add(KEYS[5], KEYS[6], 3600, rcpts)
add(KEYS[7], KEYS[8], 86400, rcpts)
return 1
