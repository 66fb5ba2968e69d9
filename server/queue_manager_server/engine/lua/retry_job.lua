-- retry_job.lua: runs a failed or cancelled job again: back to waiting, attempts counted afresh
-- (includes/requeue.lua says what is reset and what is kept); with new data, the data changes in the same
-- step (a job in another state keeps its data).
-- @include common
-- @include data
-- @include requeue
--
-- KEYS[1] meta (hash)  KEYS[2] waiting (lists)  KEYS[3] failed (zset)  KEYS[4] cancelled (zset)
-- ARGV[1] job key prefix  ARGV[2] job id  ARGV[3] "1": replace the data with ARGV[4] (content type ARGV[5]);
--   "0" or absent: keep it
-- Returns: {1, flow} waiting again (flow: 1 when its flow entry was queued, includes/requeue.lua), {-1} queue
--   not registered, {-2} job not found, {-5, state} the job is neither failed nor cancelled
local meta, waiting = KEYS[1], KEYS[2]
local prefix, id = ARGV[1], ARGV[2]
-- The existence check reads the job events' watch deadline too (common.lua watched).
local m = redis.call('HMGET', meta, 'created', 'evw')
if not m[1] then return {-1} end
local st, f = job_state(prefix .. id, 'pri', 'wt', 'exa', 'grp', 'ct', 'flo', 'par')
if not st then return {-2} end
local set = ({failed = KEYS[3], cancelled = KEYS[4]})[st]
if not set then return {-5, st} end
redis.call('ZREM', set, id)
if ARGV[3] == '1' then set_data(prefix .. id, ARGV[4], ARGV[5], f[7]) end
local now = now_ms()
watched(m[2], now)
requeue(waiting, prefix, id, f[3], f[4], f[5], now, nil, f[6])
publish_events(prefix, now)
return {1, flow_retried(prefix, id, f[8], f[9], now)}
