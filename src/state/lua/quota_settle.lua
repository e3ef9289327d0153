-- Counts and gives back in one step. ARGV: id, messages and recipients to count,
-- messages and recipients reservation `id` gives back, lease ms, then this call's
-- sequence number. The last key (after one or two parties' 8) keeps the last
-- number applied for `id`: a call made again (its answer was lost) or overtaken
-- by a later one is not applied (`state::rates::settler`).
-- A message's commit counts it and drops its whole reservation; a grant (room
-- taken ahead) counts what its instance sent since the last settle and gives back
-- what it will not use, keeping the rest held with a fresh lease. Counting
-- happens whether or not the reservation is still there (a lease may have run
-- out: the mail went anyway).
local id = ARGV[1]
if #KEYS % 8 == 1 then
  local seq = tonumber(ARGV[7])
  if seq <= tonumber(redis.call('GET', KEYS[#KEYS]) or '0') then return 0 end
  redis.call('SET', KEYS[#KEYS], seq, 'PX', tonumber(ARGV[6]))
end
local add_m, add_r = tonumber(ARGV[2]), tonumber(ARGV[3])
local drop_m, drop_r, lease_ms = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
for _, k in ipairs(PARTIES) do
  expire_leases(k)
  local r = redis.call('HGET', k[1], id)
  if r then
    r = tonumber(r)
    local m = held_msgs(k, id)
    if drop_m >= m then
      forget(k, id, m, r)
    else
      local dr = math.min(r, drop_r)
      if drop_m > 0 then
        redis.call('HINCRBY', k[1], '#m', 0 - drop_m)
        redis.call('HINCRBY', k[1], id .. '+m', 0 - drop_m)
      end
      if dr > 0 then
        redis.call('HINCRBY', k[1], '#r', 0 - dr)
        redis.call('HINCRBY', k[1], id, 0 - dr)
      end
      hold(k, id, lease_ms)
    end
  end
  add(k[3], k[4], 3600, add_m)
  add(k[5], k[6], 3600, add_r)
  add(k[7], k[8], 86400, add_r)
end
return 1
