-- watch_events.lua: this server has watchers of the queue's job events (WatchJobEvents): pushes the queue's
-- watch deadline (meta 'evw', ms, Redis clock) forward to now + ttl, never back (another server's may be
-- later). Until it passes, the queue's scripts publish their job events (common.lua watched); a server
-- that stops renewing it (its watchers left, or it died) lets it lapse.
-- @include common
--
-- KEYS[1] meta (hash)
-- ARGV[1] ttl ms
-- Returns: the deadline, or -1 when the queue is not registered
local meta, ttl = KEYS[1], tonumber(ARGV[1])
local f = redis.call('HMGET', meta, 'created', 'evw')
if not f[1] then return -1 end
local deadline = now_ms() + ttl
local held = tonumber(f[2]) or 0
if held >= deadline then return held end
redis.call('HSET', meta, 'evw', deadline)
return deadline
