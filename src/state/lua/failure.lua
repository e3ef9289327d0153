-- One login-failure record. KEYS: failures (zset: fingerprint -> first seen, ms),
-- offences (counter, kept for block_max after the last failure), block (exists
-- while blocked; its TTL is the time left).
-- ARGV: fingerprint, window ms, threshold, block ms, block max ms.
-- Returns {distinct failures in the window, block ms (0: not blocked now)}.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window, threshold = tonumber(ARGV[2]), tonumber(ARGV[3])
local block_ms, block_max = tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - window)
-- The same (username, password) again counts once: NX keeps its first time.
redis.call('ZADD', KEYS[1], 'NX', now_ms, ARGV[1])
redis.call('PEXPIRE', KEYS[1], window)
local n = redis.call('ZCARD', KEYS[1])
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[2], block_max)
end
if n < threshold then return {n, 0} end
local offences = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], block_max)
local time = math.min(block_ms * 2 ^ math.min(offences - 1, 16), block_max)
redis.call('SET', KEYS[3], '1', 'PX', time)
redis.call('DEL', KEYS[1])
return {n, time}
