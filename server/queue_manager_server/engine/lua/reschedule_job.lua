-- reschedule_job.lua: changes when a job runs. A delayed job takes the new run-at; a waiting (or paused) one
-- leaves its waiting list and is delayed until then: a job of a group leaves its group's list, counted there,
-- and one a priority bound moved to the first level is found there (common.lua remove_waiting); when due it
-- goes to the back of its own level (common.lua promote_due), its wait counting from its run-at (metrics.lua,
-- age_waiting.lua). A run-at that has come (at or before now) makes a delayed job waiting now, at the back of
-- its level, as promote_job.lua does, and leaves a waiting one where it is. A job with an expiry ('exa')
-- gets a new one ('exp'), counted from when it is ready again, and its entry in the expiry sweep's index
-- ('expiring', expire_waiting.lua) moves with it, earlier as well as later.
-- @include common
--
-- KEYS[1] meta (hash)  KEYS[2] delayed (zset)  KEYS[3] waiting (lists)
-- ARGV[1] job key prefix  ARGV[2] job id  ARGV[3] run-at ms (Redis time), or -1: ARGV[4] from now
-- ARGV[4] delay ms from now (when ARGV[3] is -1)  ARGV[5] events channel  ARGV[6] queue name (for the events)
-- Returns: {2, run-at} delayed until run-at, {1, now} waiting, {-1} queue not registered, {-2} job not found,
--   {-5, state} neither waiting nor delayed. A delay publishes its wake-up event ('d'), a job made waiting
--   its 'w' (common.lua publish_ready).
local meta, delayed, waiting = KEYS[1], KEYS[2], KEYS[3]
local prefix, id, at, delay = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local channel, queue = ARGV[5], ARGV[6]
if redis.call('EXISTS', meta) == 0 then return {-1} end
local jkey = prefix .. id
local st, f = job_state(jkey, 'exa', 'pri', 'grp', 'wt')
if not st then return {-2} end
if st ~= 'waiting' and st ~= 'delayed' then return {-5, st} end
local now = now_ms()
local run = at
if run < 0 then run = now + delay end
local exa = tonumber(f[3])
if run <= now then
  if st == 'waiting' then return {1, now} end
  redis.call('ZREM', delayed, id)
  redis.call('HDEL', jkey, 'run')
  if exa then
    redis.call('HSET', jkey, 'rdy', now, 'exp', now + exa)
    redis.call('ZADD', queue_key(prefix, 'expiring'), now + exa, id)
  else
    redis.call('HSET', jkey, 'rdy', now)
  end
  to_waiting(waiting, jkey, id, true)
  publish_ready(meta, channel, queue, 1, -1)
  return {1, now}
end
if st == 'waiting' then
  remove_waiting(waiting, f[4], id, f[5])
  redis.call('HSET', jkey, 'st', 'delayed', 'run', run)
  notify_job(prefix, id, jkey, 'delayed', f[6])
else
  redis.call('HSET', jkey, 'run', run)
end
redis.call('ZADD', delayed, run, id)
if exa then
  redis.call('HSET', jkey, 'exp', run + exa)
  redis.call('ZADD', queue_key(prefix, 'expiring'), run + exa, id)
end
publish_ready(meta, channel, queue, 0, run)
return {2, run}
