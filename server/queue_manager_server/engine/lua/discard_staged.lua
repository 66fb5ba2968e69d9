-- discard_staged.lua: rolls back a bulk stream in one queue: its staged jobs are dropped unseen.
--
-- KEYS[1] the stream's staged jobs in this queue (list)  KEYS[2] bulk (hash)
-- ARGV[1] stream id
-- Returns: 1
redis.call('UNLINK', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
