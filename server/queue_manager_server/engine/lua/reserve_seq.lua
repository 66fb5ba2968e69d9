-- reserve_seq.lua: reserves a range of FIFO sequence numbers for a bulk write (see add_jobs.lua).
--
-- KEYS[1] meta (hash)
-- ARGV[1] how many
-- Returns: the first number of the range, or -1 when the queue is not registered
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
return redis.call('HINCRBY', KEYS[1], 'seq', ARGV[1]) - tonumber(ARGV[1]) + 1
