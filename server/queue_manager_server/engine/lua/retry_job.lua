-- retry_job.lua: runs a failed or cancelled job again: back to waiting, attempts counted afresh
-- (includes/requeue.lua says what is reset and what is kept).
-- @include common
-- @include requeue
--
-- KEYS[1] meta (hash)  KEYS[2] waiting (lists)  KEYS[3] failed (zset)  KEYS[4] cancelled (zset)
-- ARGV[1] job key prefix  ARGV[2] job id
-- Returns: {1, flow} waiting again (flow: 1 when its flow entry was queued, includes/requeue.lua), {-1} queue not registered, {-2} job not found, {-5, state} the job is
--   neither failed nor cancelled
local meta, waiting = KEYS[1], KEYS[2]
local prefix, id = ARGV[1], ARGV[2]
if redis.call('EXISTS', meta) == 0 then return {-1} end
local st, f = job_state(prefix .. id, 'pri', 'wt', 'exa', 'grp', 'flo', 'par')
if not st then return {-2} end
local set = ({failed = KEYS[3], cancelled = KEYS[4]})[st]
if not set then return {-5, st} end
redis.call('ZREM', set, id)
local now = now_ms()
requeue(waiting, prefix, id, f[3], f[4], f[5], now, nil, f[6])
return {1, flow_retried(prefix, id, f[7], f[8], now)}
