-- stage_jobs.lua: holds one chunk of a bulk stream's jobs aside, invisible to everyone, until the whole
-- stream is committed (publish_staged.lua then adds them) or rolled back (discard_staged.lua).
--
-- KEYS[1] meta (hash)  KEYS[2] the stream's staged jobs in this queue (list)  KEYS[3] bulk (hash)
-- ARGV[1] stream id; then groups of 4: header, data, metadata, extra fields
--   (see includes/add.lua)
-- Returns: 0, or -1 when the queue is not registered (nothing written).
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('RPUSH', KEYS[2], unpack(ARGV, 2))
-- The time of the stream's last chunk: a stream idle too long without a decision is rolled back.
local t = redis.call('TIME')
redis.call('HSET', KEYS[3], ARGV[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
return 0
