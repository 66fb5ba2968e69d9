-- change_priority.lua: changes the priority of a waiting or delayed job. A waiting job moves to the new
-- level keeping its age (its seq), so it runs before jobs of that level added after it; a delayed job
-- takes the new level when it becomes due.
-- @include common
--
-- KEYS[1] meta (hash)  KEYS[2] waiting (zset)
-- ARGV[1] job key prefix  ARGV[2] job id  ARGV[3] priority (1-5)
-- Returns: {1} changed, {-1} queue not registered, {-2} job not found, {-5, state} neither waiting nor
--   delayed
local meta, waiting = KEYS[1], KEYS[2]
local prefix, id, pri = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('EXISTS', meta) == 0 then return {-1} end
local jkey = prefix .. id
local st = redis.call('HGET', jkey, 'st')
if not st then return {-2} end
if st ~= 'waiting' and st ~= 'delayed' then return {-5, st} end
-- The default priority is not stored (includes/add.lua).
if pri == DEFAULT_PRI then redis.call('HDEL', jkey, 'pri') else redis.call('HSET', jkey, 'pri', pri) end
if st == 'waiting' then
  -- A waiting job's seq is its score less its level (common.lua to_waiting).
  local score = redis.call('ZSCORE', waiting, id)
  if score then redis.call('ZADD', waiting, pri * PRI_SHIFT + tonumber(score) % PRI_SHIFT, id) end
end
return {1}
