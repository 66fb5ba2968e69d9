-- retry_jobs.lua: runs the failed (or cancelled) jobs of a queue again, oldest finish first, at most N
-- per call; the caller repeats until a call scans fewer than N.
-- @include common
-- @include requeue
--
-- KEYS[1] meta (hash)  KEYS[2] waiting (lists)  KEYS[3] the state's zset (failed or cancelled)
-- ARGV[1] job key prefix  ARGV[2] most jobs per call N  ARGV[3] cutoff ms: only jobs that finished at or
--   before it, so jobs that fail again while the caller repeats are not run twice
-- Returns: {jobs moved back to waiting, ids scanned (fewer than N: done), flow entries queued
--   (includes/requeue.lua flow_retried)}, or {-1} when the queue is not
--   registered
local meta, waiting, set = KEYS[1], KEYS[2], KEYS[3]
local prefix, limit = ARGV[1], tonumber(ARGV[2])
-- The existence check reads the job events' watch deadline too (common.lua watched).
local m = redis.call('HMGET', meta, 'created', 'evw')
if not m[1] then return {-1} end
local ids = redis.call('ZRANGEBYSCORE', set, '-inf', ARGV[3], 'LIMIT', 0, limit)
local moved, flows = 0, 0
local now = now_ms()
-- Per job one read (every job has its 'ts': a member whose job is gone has nothing to run) and two writes;
-- the zset and each level's list once for the batch.
local pushes = {}
watched(m[2], now)
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', prefix .. id, 'ts', 'pri', 'wt', 'exa', 'grp', 'flo', 'par')
  if f[1] then
    requeue(waiting, prefix, id, f[2], f[3], f[4], now, pushes, f[5])
    flows = flows + flow_retried(prefix, id, f[6], f[7], now)
    moved = moved + 1
  end
end
push_waiting(pushes)
zrem_all(set, ids)
publish_events(prefix, now)
return {moved, #ids, flows}
