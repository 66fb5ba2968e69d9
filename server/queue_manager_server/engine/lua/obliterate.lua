-- obliterate.lua: deletes a queue and its jobs, a chunk per call; the caller repeats until done.
-- @include common
--
-- KEYS[1] meta  KEYS[2] waiting  KEYS[3] delayed  KEYS[4] active  KEYS[5] completed  KEYS[6] failed
-- KEYS[7] limiter  KEYS[8] dead-letter outbox  KEYS[9] bulk (hash: staged bulk streams)
-- ARGV[1] job key prefix  ARGV[2] force (1 = even with active jobs)  ARGV[3] jobs per call
-- ARGV[4] key prefix of staged bulk streams (<prefix><stream id>)
-- Returns: {removed, done (1/0)} or {-4} when jobs are active and force is 0
local prefix, force, chunk = ARGV[1], ARGV[2] == '1', tonumber(ARGV[3])
if not force and redis.call('ZCARD', KEYS[4]) > 0 then return {-4} end
-- Bulk streams still staged into the queue are dropped with it.
for _, sid in ipairs(redis.call('HKEYS', KEYS[9])) do redis.call('UNLINK', ARGV[4] .. sid) end
-- The queue stops existing first, so no job can be added while the rest is deleted.
redis.call('DEL', KEYS[1], KEYS[7], KEYS[8], KEYS[9])
local removed = 0
for k = 2, 6 do
  if removed < chunk then
    removed = removed + delete_jobs(KEYS[k], prefix, redis.call('ZRANGE', KEYS[k], 0, chunk - removed - 1))
  end
end
if removed < chunk then return {removed, 1} end
return {removed, 0}
