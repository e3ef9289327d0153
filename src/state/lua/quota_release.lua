-- ARGV: id, messages (1: the whole reservation goes), recipients given back.
local id = ARGV[1]
local held = redis.call('HGET', KEYS[1], id)
if not held then return 0 end
held = tonumber(held)
if ARGV[2] == '1' then
  redis.call('HINCRBY', KEYS[1], '#m', -1)
  redis.call('HINCRBY', KEYS[1], '#r', -held)
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
else
  local n = math.min(held, tonumber(ARGV[3]))
  redis.call('HINCRBY', KEYS[1], id, 0 - n)
  redis.call('HINCRBY', KEYS[1], '#r', 0 - n)
end
return 1
