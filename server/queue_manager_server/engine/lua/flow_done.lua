-- flow_done.lua: clears a flow hand-off the server has carried out (see services/flows.py) and records on
-- the job, if it still exists, the children it started.
--
-- KEYS[1] flow outbox (list)  KEYS[2] the job's flow entry (hash)  KEYS[3] the job (hash)
-- ARGV[1] job id  ARGV[2] children (an encoded Job holding only children; "" for none)
-- Returns: 1
redis.call('LREM', KEYS[1], 1, ARGV[1])
redis.call('DEL', KEYS[2])
if ARGV[2] ~= '' and redis.call('EXISTS', KEYS[3]) == 1 then redis.call('HSET', KEYS[3], 'chd', ARGV[2]) end
return 1
