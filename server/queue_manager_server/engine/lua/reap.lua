-- reap.lua: recovers active jobs whose lease expired (the backstop for workers and servers that died).
-- @include common
-- @include stats
--
-- KEYS[1] meta (hash)  KEYS[2] active (zset)  KEYS[3] waiting (lists)  KEYS[4] failed (zset)
-- KEYS[5] dead-letter outbox (list)
-- ARGV[1] job key prefix  ARGV[2] max jobs per call
-- A job whose cancel was asked while it ran ends cancelled instead (its worker never reported the stop).
-- Returns: {now, back to waiting, failed for good, earliest remaining lease expiry (-1 = none), cancelled}
-- Failures for good count in the queue's activity (stats.lua).
local meta, active, waiting, failed, outbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, limit = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local back, lost, cancelled = 0, 0, 0
local ids = redis.call('ZRANGEBYSCORE', active, '-inf', now, 'LIMIT', 0, limit)
-- Last first: each job goes back to the head of its level, so the earliest expired runs first again. Per job
-- one read and one write; the pushes to each level and the queue's stall count once for the batch.
local fronts = {}
if #ids > 0 then watch_settings(meta, now) end
for i = #ids, 1, -1 do
  local r = recover_stalled(meta, waiting, failed, outbox, prefix, ids[i], now, fronts,
    'lease expired: the worker stopped extending it')
  if r == 1 then
    back = back + 1
  elseif r == 2 then
    lost = lost + 1
  elseif r == 3 then
    cancelled = cancelled + 1
  end
end
push_waiting(fronts, 'LPUSH')
-- Out of the active set last: a call stopped by an error midway leaves every job it had not pushed leased,
-- for the next call, rather than in no list at all.
zrem_all(active, ids)
if back + lost > 0 then redis.call('HINCRBY', meta, 'stalled_total', back + lost) end
if #ids > 0 then slot_freed(meta, prefix) end
write_stats(prefix, now)
publish_events(prefix, now)
local nx = redis.call('ZRANGE', active, 0, 0, 'WITHSCORES')
local next_expiry = -1
if #nx > 0 then next_expiry = tonumber(nx[2]) end
return {now, back, lost, next_expiry, cancelled}
