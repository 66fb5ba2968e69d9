-- remove_job.lua: deletes one job that is not active, with its log lines; releases its dedup key.
-- @include common
--
-- KEYS[1] waiting (lists)  KEYS[2] delayed  KEYS[3] completed  KEYS[4] failed
-- ARGV[1] job key prefix  ARGV[2] job id
-- (a cancelled job leaves the cancelled set, derived from the job prefix)
-- Returns: {state the job was in} or {-2} not found, {-4} job is active
local jkey = ARGV[1] .. ARGV[2]
local f = redis.call('HMGET', jkey, 'st', 'ddk', 'ddt', 'wt', 'pri', 'ts')
local st = f[1] or (f[6] and 'waiting')  -- a job added waiting has no 'st' (includes/add.lua)
if not st then return {-2} end
if st == 'active' then return {-4} end
-- A key held until the job finishes is free once it is removed; a ttl'd key holds for its window.
if f[2] and not f[3] then release_dedup(ARGV[1], ARGV[2], f[2]) end
notify_job(ARGV[1], ARGV[2], jkey, 'removed', f[4])
local sets = {delayed = KEYS[2], completed = KEYS[3], failed = KEYS[4], cancelled = queue_key(ARGV[1], 'cancelled')}
if st == 'waiting' then
  remove_waiting(KEYS[1], f[5], ARGV[2])
elseif sets[st] then
  redis.call('ZREM', sets[st], ARGV[2])
end
redis.call('DEL', jkey, job_logs_key(ARGV[1], ARGV[2]))
return {st}
