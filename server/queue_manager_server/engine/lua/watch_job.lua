-- watch_job.lua: flags a job as waited for ('wt'), so every later change of its state is published on
-- the events channel (common.lua notify_job) for the servers following it (WaitForJob).
-- @include common
--
-- KEYS[1] meta (hash)  KEYS[2] the job (hash)
-- Returns: 1 flagged, -2 job not found, -1 queue not registered
if redis.call('EXISTS', KEYS[2]) == 0 then
  if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
  return -2
end
redis.call('HSET', KEYS[2], 'wt', '1', 'p', NOT_PLAIN)
return 1
