-- handoff_done.lua: finishes a dead-letter hand-off once the copy exists in the dead-letter queue.
-- @include common
--
-- KEYS[1] dead-letter outbox (list)  KEYS[2] failed (zset)
-- ARGV[1] job key prefix  ARGV[2] job id
-- Returns: 1
local jkey = ARGV[1] .. ARGV[2]
redis.call('LREM', KEYS[1], 1, ARGV[2])
if redis.call('HGET', jkey, 'rm') == '1' then
  redis.call('DEL', jkey, job_logs_key(ARGV[1], ARGV[2]))
  redis.call('ZREM', KEYS[2], ARGV[2])
end
return 1
