-- ARGV: id, recipients accepted. Counts the message in every party whether or
-- not its reservation is still there (a lease may have run out: the mail went anyway).
local id = ARGV[1]
local rcpts = tonumber(ARGV[2])
for _, k in ipairs(PARTIES) do
  expire_leases(k)
  local held = redis.call('HGET', k[1], id)
  if held then
    redis.call('HINCRBY', k[1], '#m', -1)
    redis.call('HINCRBY', k[1], '#r', 0 - tonumber(held))
    redis.call('HDEL', k[1], id)
    redis.call('ZREM', k[2], id)
  end
  add(k[3], k[4], 3600, 1)
  add(k[5], k[6], 3600, rcpts)
  add(k[7], k[8], 86400, rcpts)
end
return 1
