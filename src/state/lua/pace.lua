-- GCRA with a burst of one, shared. KEYS: the entry's next free slot (ms).
-- ARGV: interval ms, longest wait ms the caller accepts.
-- Returns {1, wait ms} when the slot is claimed, {0, wait ms} when it is further
-- than the caller accepts (nothing claimed).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2])
local slot = math.max(now, tonumber(redis.call('GET', KEYS[1]) or '0'))
local wait = slot - now
if wait > max_wait then return {0, wait} end
redis.call('SET', KEYS[1], slot + interval, 'PX', wait + interval + 60000)
return {1, wait}
