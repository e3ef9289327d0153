-- Shared by every quota script. KEYS: the 8 keys of one party (a user), then
-- optionally the 8 of a second (the message's sender domain); each party:
--   1 reservations (hash: id -> recipients held, 'id+m' -> messages held when
--     more than one (a grant); '#m', '#r' totals)
--   2 leases (zset: id -> expiry in ms)
--   3,4 messages per hour: bucket counts (hash: second -> n; '#' total), bucket index (zset)
--   5,6 recipients per hour;  7,8 recipients per day
-- One script checks and changes both parties, so a message is reserved in its
-- user and its domain at once or in neither.
-- Time is Redis's own clock, so instances with skewed clocks still agree.
-- Negative increments are written `0 - n`: Lua prints -0 as "-0", which HINCRBY refuses.
local t = redis.call('TIME')
local now_s = tonumber(t[1])
local now_ms = now_s * 1000 + math.floor(tonumber(t[2]) / 1000)

local function party(base)
  local k = {}
  for i = 1, 8 do k[i] = KEYS[base + i] end
  return k
end
local U = party(0)
local D = nil
if #KEYS >= 16 then D = party(8) end
local PARTIES = {U}
if D then PARTIES[2] = D end

-- Messages a reservation holds: a grant (room taken ahead by one instance, see
-- `state::grants`) keeps its count in `ID+m`; a single message's has none.
local function held_msgs(k, id)
  return tonumber(redis.call('HGET', k[1], id .. '+m') or '1')
end

-- Drops reservation `id` (holding `m` messages, `r` recipients) from party `k`.
local function forget(k, id, m, r)
  redis.call('HINCRBY', k[1], '#m', 0 - m)
  redis.call('HINCRBY', k[1], '#r', 0 - r)
  redis.call('HDEL', k[1], id, id .. '+m')
  redis.call('ZREM', k[2], id)
end

-- Reservations whose lease ran out belong to an instance that crashed or lost
-- Redis mid-transaction: give them back.
local function expire_leases(k)
  local gone = redis.call('ZRANGEBYSCORE', k[2], '-inf', now_ms)
  for _, id in ipairs(gone) do
    local r = redis.call('HGET', k[1], id)
    if r then forget(k, id, held_msgs(k, id), tonumber(r)) end
  end
  if #gone > 0 then
    redis.call('ZREMRANGEBYSCORE', k[2], '-inf', now_ms)
  end
end

local function reserved(k, field)
  return tonumber(redis.call('HGET', k[1], field) or '0')
end

-- The count of a window of `len` seconds, after dropping the buckets that left it
-- (bucket s leaves when s + len <= now, as in the memory store).
local function used(counts, index, len)
  local cutoff = now_s - len
  local old = redis.call('ZRANGEBYSCORE', index, '-inf', cutoff, 'LIMIT', 0, 5000)
  while #old > 0 do
    local n = redis.call('HMGET', counts, unpack(old))
    local sum = 0
    for _, v in ipairs(n) do sum = sum + (tonumber(v) or 0) end
    redis.call('HINCRBY', counts, '#', 0 - sum)
    redis.call('HDEL', counts, unpack(old))
    redis.call('ZREM', index, unpack(old))
    old = redis.call('ZRANGEBYSCORE', index, '-inf', cutoff, 'LIMIT', 0, 5000)
  end
  return tonumber(redis.call('HGET', counts, '#') or '0')
end

-- Seconds until the oldest counted bucket leaves the window (60 when everything
-- is only reserved by transactions in progress).
local function retry_after(index, len, count)
  if count == 0 then return 60 end
  local first = redis.call('ZRANGE', index, 0, 0, 'WITHSCORES')
  if #first == 0 then return 60 end
  return math.max(tonumber(first[2]) + len - now_s, 1)
end

-- nil if `extra` more fit under `max` (negative: no limit), else the refusal.
local function check(counts, index, len, held, max, name, extra)
  if max < 0 then return nil end
  local n = used(counts, index, len)
  if n + held + extra <= max then return nil end
  return {0, name, max, retry_after(index, len, n)}
end

-- How many more fit under `max` (negative: no limit) in a window, `held` reserved.
local function room(counts, index, len, held, max)
  if max < 0 then return 2 ^ 40 end
  return max - used(counts, index, len) - held
end

local function message_room(k, max)
  return room(k[3], k[4], 3600, reserved(k, '#m'), max)
end

local function rcpt_room(k, max_rh, max_rd)
  local held = reserved(k, '#r')
  return math.min(room(k[5], k[6], 3600, held, max_rh), room(k[7], k[8], 86400, held, max_rd))
end

-- Room an instance may take ahead beyond the one it needs now: nothing within
-- 128 of the limit (every message then asks), at most 1/128 of the room beyond.
local function ahead(room_left, want)
  return math.max(math.min(want, math.floor((room_left - 1) / 128)), 0)
end

local function check_message(k, max)
  return check(k[3], k[4], 3600, reserved(k, '#m'), max, 'messages_per_hour', 1)
end

local function check_rcpt(k, max_rh, max_rd, extra)
  local held = reserved(k, '#r')
  return check(k[5], k[6], 3600, held, max_rh, 'recipients_per_hour', extra)
    or check(k[7], k[8], 86400, held, max_rd, 'recipients_per_day', extra)
end

-- A refusal by the sender domain's limits says so (a fifth element).
local function of_domain(r)
  if r then r[5] = 'domain' end
  return r
end

local function add(counts, index, len, n)
  if n <= 0 then return end
  redis.call('HINCRBY', counts, now_s, n)
  redis.call('HINCRBY', counts, '#', n)
  redis.call('ZADD', index, now_s, now_s)
  redis.call('EXPIRE', counts, len + 60)
  redis.call('EXPIRE', index, len + 60)
end

local function hold(k, id, lease_ms)
  redis.call('ZADD', k[2], now_ms + lease_ms, id)
  redis.call('PEXPIRE', k[1], lease_ms * 2)
  redis.call('PEXPIRE', k[2], lease_ms * 2)
end

-- Adds `r` recipients to reservation `id` of every party.
local function hold_rcpts(id, r)
  for _, k in ipairs(PARTIES) do
    redis.call('HINCRBY', k[1], id, r)
    redis.call('HINCRBY', k[1], '#r', r)
  end
end
