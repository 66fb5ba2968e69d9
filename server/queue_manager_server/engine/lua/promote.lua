-- promote.lua: moves due delayed jobs to waiting (claim does the same for queues being served).
-- @include common
--
-- KEYS[1] meta (hash)  KEYS[2] delayed (zset)  KEYS[3] waiting (zset)
-- ARGV[1] job key prefix  ARGV[2] max jobs per call
-- Returns: {now, promoted, next run-at (-1 = none)}
local meta, delayed, waiting = KEYS[1], KEYS[2], KEYS[3]
local prefix, limit = ARGV[1], tonumber(ARGV[2])
if redis.call('EXISTS', meta) == 0 then return {now_ms(), 0, -1} end
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(due) do to_waiting(meta, waiting, prefix .. id, id, true) end
if #due > 0 then redis.call('ZREM', delayed, unpack(due)) end
local nd = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
local next_due = -1
if #nd > 0 then next_due = tonumber(nd[2]) end
return {now, #due, next_due}
