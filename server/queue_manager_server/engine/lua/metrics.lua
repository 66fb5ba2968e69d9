-- metrics.lua: counts a queue's jobs by state in one atomic read.
-- @include common
--
-- KEYS[1] meta  KEYS[2] waiting  KEYS[3] delayed  KEYS[4] active  KEYS[5] completed  KEYS[6] failed
-- KEYS[7] cancelled
-- Returns: {-1} when the queue is not registered, else
--   {1, paused flag, waiting, delayed, active, completed, failed, stalled (expired leases), stalled total,
--   cancelled}
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local m = redis.call('HMGET', KEYS[1], 'paused', 'stalled_total')
return {1, tonumber(m[1]) or 0, redis.call('ZCARD', KEYS[2]), redis.call('ZCARD', KEYS[3]),
  redis.call('ZCARD', KEYS[4]), redis.call('ZCARD', KEYS[5]), redis.call('ZCARD', KEYS[6]),
  redis.call('ZCOUNT', KEYS[4], '-inf', now_ms()), tonumber(m[2]) or 0, redis.call('ZCARD', KEYS[7])}
