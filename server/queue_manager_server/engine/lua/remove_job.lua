-- remove_job.lua: deletes one job that is not active.
--
-- KEYS[1] waiting  KEYS[2] delayed  KEYS[3] completed  KEYS[4] failed
-- ARGV[1] job key prefix  ARGV[2] job id
-- Returns: {state the job was in} or {-2} not found, {-4} job is active
local jkey = ARGV[1] .. ARGV[2]
local st = redis.call('HGET', jkey, 'st')
if not st then return {-2} end
if st == 'active' then return {-4} end
local sets = {waiting = KEYS[1], delayed = KEYS[2], completed = KEYS[3], failed = KEYS[4]}
if sets[st] then redis.call('ZREM', sets[st], ARGV[2]) end
redis.call('DEL', jkey)
return {st}
