-- set_paused.lua: pauses or resumes a queue.
--
-- KEYS[1] meta (hash)
-- ARGV[1] paused (1/0)
-- Returns: 1 ok, -1 queue not registered
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('HSET', KEYS[1], 'paused', ARGV[1])
return 1
