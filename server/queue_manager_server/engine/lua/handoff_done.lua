-- handoff_done.lua: finishes the dead-letter hand-off of a batch of jobs once their copies exist in the
-- dead-letter queue: each leaves the outbox, and a job to be removed on failure ('rm') is deleted now.
-- @include common
--
-- KEYS[1] dead-letter outbox (list)  KEYS[2] failed (zset)
-- ARGV[1] job key prefix  ARGV[2..] job ids
-- Returns: the number of job ids
local prefix = ARGV[1]
for i = 2, #ARGV do
  local id = ARGV[i]
  local jkey = prefix .. id
  redis.call('LREM', KEYS[1], 1, id)
  if redis.call('HGET', jkey, 'rm') == '1' then
    redis.call('DEL', jkey, job_logs_key(prefix, id))
    redis.call('ZREM', KEYS[2], id)
  end
end
return #ARGV - 1
