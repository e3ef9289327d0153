-- ARGV: id, messages (1: the whole reservation goes), recipients given back.
local id = ARGV[1]
for _, k in ipairs(PARTIES) do
  local held = redis.call('HGET', k[1], id)
  if held then
    held = tonumber(held)
    if ARGV[2] == '1' then
      redis.call('HINCRBY', k[1], '#m', -1)
      redis.call('HINCRBY', k[1], '#r', 0 - held)
      redis.call('HDEL', k[1], id)
      redis.call('ZREM', k[2], id)
    else
      local n = math.min(held, tonumber(ARGV[3]))
      redis.call('HINCRBY', k[1], id, 0 - n)
      redis.call('HINCRBY', k[1], '#r', 0 - n)
    end
  end
end
return 1
