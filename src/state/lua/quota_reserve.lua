-- ARGV: id, lease ms, the user's max messages/hour, recipients/hour, recipients/day
-- (-1: no limit), 1 to also reserve recipients ahead (a recipient limit applies:
-- the common message has one, and its RCPT then needs no round trip), the domain's
-- three maxima (with the domain's keys), then how many more messages (and as many
-- recipients) the instance would take ahead as a grant, far from the limits.
-- Returns {1, recipients reserved, messages reserved (1 + those ahead)} or
-- {0, limit, max, retry after seconds[, 'domain']}.
for _, k in ipairs(PARTIES) do expire_leases(k) end
local id, lease_ms, want = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[10] or '0')
local m_room = message_room(U, tonumber(ARGV[3]))
if m_room < 1 then return check_message(U, tonumber(ARGV[3])) end
if D then
  local d_room = message_room(D, tonumber(ARGV[7]))
  if d_room < 1 then return of_domain(check_message(D, tonumber(ARGV[7]))) end
  m_room = math.min(m_room, d_room)
end
local msgs = 1 + ahead(m_room, want)
local rcpts = 0
if ARGV[6] == '1' then
  local r_room = rcpt_room(U, tonumber(ARGV[4]), tonumber(ARGV[5]))
  if D then r_room = math.min(r_room, rcpt_room(D, tonumber(ARGV[8]), tonumber(ARGV[9]))) end
  if r_room >= 1 then rcpts = 1 + ahead(r_room, want) end
  -- Without a grant the message alone holds them: one recipient ahead, as before.
  if msgs == 1 then rcpts = math.min(rcpts, 1) end
end
for _, k in ipairs(PARTIES) do
  redis.call('HSET', k[1], id, rcpts)
  if msgs > 1 then redis.call('HSET', k[1], id .. '+m', msgs) end
  redis.call('HINCRBY', k[1], '#m', msgs)
  if rcpts > 0 then redis.call('HINCRBY', k[1], '#r', rcpts) end
  hold(k, id, lease_ms)
end
return {1, rcpts, msgs}
