-- promote.lua: moves due delayed jobs to waiting (claim does the same for queues being served).
-- @include common
--
-- KEYS[1] meta (hash)  KEYS[2] delayed (zset)  KEYS[3] waiting (lists)
-- ARGV[1] job key prefix  ARGV[2] max jobs per call
-- Returns: {now, promoted, next run-at (-1 = none)}
local meta, delayed, waiting = KEYS[1], KEYS[2], KEYS[3]
local prefix, limit = ARGV[1], tonumber(ARGV[2])
-- The existence check reads the job events' watch deadline too (common.lua watched).
local m = redis.call('HMGET', meta, 'created', 'evw')
if not m[1] then return {now_ms(), 0, -1} end
local now = now_ms()
watched(m[2], now)
local promoted, next_due = promote_due(delayed, waiting, prefix, now, limit)
publish_events(prefix, now)
return {now, promoted, next_due}
