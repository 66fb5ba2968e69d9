-- retry_jobs.lua: runs the failed (or cancelled) jobs of a queue again, oldest finish first, at most N
-- per call; the caller repeats until a call scans fewer than N.
-- @include common
-- @include requeue
--
-- KEYS[1] meta (hash)  KEYS[2] waiting (lists)  KEYS[3] the state's zset (failed or cancelled)
-- ARGV[1] job key prefix  ARGV[2] most jobs per call N  ARGV[3] cutoff ms: only jobs that finished at or
--   before it, so jobs that fail again while the caller repeats are not run twice
-- Returns: {jobs moved back to waiting, ids scanned (fewer than N: done)}, or {-1} when the queue is not
--   registered
local meta, waiting, set = KEYS[1], KEYS[2], KEYS[3]
local prefix, limit = ARGV[1], tonumber(ARGV[2])
if redis.call('EXISTS', meta) == 0 then return {-1} end
local ids = redis.call('ZRANGEBYSCORE', set, '-inf', ARGV[3], 'LIMIT', 0, limit)
local moved = 0
for _, id in ipairs(ids) do
  if redis.call('EXISTS', prefix .. id) == 1 then
    requeue(meta, waiting, set, prefix, id)
    moved = moved + 1
  else
    redis.call('ZREM', set, id)  -- a member whose job is gone: nothing to run
  end
end
return {moved, #ids}
