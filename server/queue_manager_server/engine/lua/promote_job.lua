-- promote_job.lua: makes one delayed job waiting now, at the back of its priority level; its run-at goes and
-- 'rdy' becomes now (its wait counts from here: metrics.lua, age_waiting.lua), and so does its expiry window
-- ('exp' = now + 'exa': an expiry counts from when the job is ready, includes/add.lua).
-- @include common
--
-- KEYS[1] meta (hash)  KEYS[2] delayed (zset)  KEYS[3] waiting (lists)
-- ARGV[1] job key prefix  ARGV[2] job id
-- Returns: {1} waiting now, {-1} queue not registered, {-2} job not found, {-5, state} not delayed
local meta, delayed, waiting = KEYS[1], KEYS[2], KEYS[3]
local prefix, id = ARGV[1], ARGV[2]
-- The existence check reads the job events' watch deadline too (common.lua watched).
local m = redis.call('HMGET', meta, 'created', 'evw')
if not m[1] then return {-1} end
local jkey = prefix .. id
local now = now_ms()
watched(m[2], now)
local st, f = job_state(jkey, 'exa')
if not st then return {-2} end
if st ~= 'delayed' then return {-5, st} end
redis.call('ZREM', delayed, id)
redis.call('HDEL', jkey, 'run')
local exa = tonumber(f[3])
if exa then
  redis.call('HSET', jkey, 'rdy', now, 'exp', now + exa)
else
  redis.call('HSET', jkey, 'rdy', now)
end
to_waiting(waiting, jkey, id, true)
publish_events(prefix, now)
return {1}
