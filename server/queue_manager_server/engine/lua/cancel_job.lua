-- cancel_job.lua: cancels one job. A waiting (or paused) or delayed job ends cancelled at once. An active
-- job is marked cancel-requested with the reason, and the server holding its lease is told to stop the run
-- ('c <queue> <id> <token> <reason>' on the events channel); the job then ends cancelled when its worker
-- reports the stop, when it fails with attempts left, or when its lease runs out (release.lua, fail.lua,
-- reap.lua). A completion or a failure for good that arrives first is recorded as usual.
-- @include common
--
-- KEYS[1] meta (hash)  KEYS[2] waiting (lists)  KEYS[3] delayed (zset)
-- ARGV[1] job key prefix  ARGV[2] job id  ARGV[3] reason ("" = none)  ARGV[4] events channel
-- ARGV[5] queue name
-- Returns: {code, state the job was in}: 0 cancelled now, 1 cancel requested (active; asked again, the
--   worker is told again), -1 no queue, -2 job not found, -5 already finished (completed, failed or
--   cancelled)
local meta, waiting, delayed = KEYS[1], KEYS[2], KEYS[3]
local prefix, id, reason, channel, queue = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local jkey = prefix .. id
local st, f = job_state(jkey, 'tok', 'pri', 'grp')
if not st then
  if redis.call('EXISTS', meta) == 0 then return {-1, ''} end
  return {-2, ''}
end
if st == 'active' then
  redis.call('HSET', jkey, 'cxr', '1')
  if reason ~= '' then redis.call('HSET', jkey, 'cxm', reason) end
  local why = 'cancelled'
  if reason ~= '' then why = 'cancelled: ' .. reason end
  redis.call('PUBLISH', channel, 'c ' .. queue .. ' ' .. id .. ' ' .. (f[3] or '') .. ' ' .. why)
  return {1, st}
end
if st == 'waiting' then
  remove_waiting(waiting, f[4], id, f[5])
elseif st == 'delayed' then
  redis.call('ZREM', delayed, id)
else
  return {-5, st}
end
if reason ~= '' then redis.call('HSET', jkey, 'cxm', reason) end
local now = now_ms()
watch_settings(meta, now)
finish_cancelled(meta, prefix, id, now)
publish_events(prefix, now)
return {0, st}
