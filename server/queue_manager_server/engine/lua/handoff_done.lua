-- handoff_done.lua: finishes the dead-letter hand-off of a batch of jobs once their copies exist in the
-- dead-letter queue: each leaves the outbox, and a job to be removed on failure ('rm') is deleted now. Once
-- the outbox is empty the failed set is trimmed, by the retention of each job handed off (fail_for_good
-- leaves that to this script: no job may be trimmed before its copy is written).
-- @include common
--
-- KEYS[1] dead-letter outbox (list)  KEYS[2] failed (zset)  KEYS[3] meta (hash)
-- ARGV[1] job key prefix  ARGV[2..] job ids
-- Returns: the number of job ids
local outbox, failed, meta, prefix = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local policies = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local jkey = prefix .. id
  redis.call('LREM', outbox, 1, id)
  local f = redis.call('HMGET', jkey, 'rm', 'kf')
  if f[1] == '1' then
    redis.call('DEL', jkey, job_logs_key(prefix, id))
    redis.call('ZREM', failed, id)
  end
  policies[f[2] or ''] = true
end
if redis.call('LLEN', outbox) == 0 then
  local now = now_ms()
  for policy in pairs(policies) do
    local _, age, count = keep_policy(meta, policy, 'kf')
    trim(failed, prefix, age, count, now)
  end
end
return #ARGV - 1
