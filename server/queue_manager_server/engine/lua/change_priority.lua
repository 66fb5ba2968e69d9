-- change_priority.lua: changes the priority of a waiting or delayed job. A waiting job moves to the new
-- level keeping its age: ahead of the jobs of that level added after it, found by a binary search on the add
-- time (ms) over the level's list, which is FIFO (jobs put back or promoted since may bend that order
-- locally; a job added in the same millisecond counts as later). The job is found in its old level by a scan
-- of that list. A delayed job takes the new level when it is due. A job of a group moves within its group's
-- lists.
-- @include common
--
-- KEYS[1] meta (hash)  KEYS[2] waiting (lists)
-- ARGV[1] job key prefix  ARGV[2] job id  ARGV[3] priority (1-5)
-- Returns: {1} changed, {-1} queue not registered, {-2} job not found, {-5, state} neither waiting nor
--   delayed
local meta, waiting = KEYS[1], KEYS[2]
local prefix, id, pri = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('EXISTS', meta) == 0 then return {-1} end
local jkey = prefix .. id
local st, f = job_state(jkey, 'pri', 'grp')
if not st then return {-2} end
if st ~= 'waiting' and st ~= 'delayed' then return {-5, st} end
-- The default priority is not stored (includes/add.lua).
if pri == DEFAULT_PRI then
  redis.call('HDEL', jkey, 'pri')
  redis.call('HSET', jkey, 'p', NOT_PLAIN)
else
  redis.call('HSET', jkey, 'pri', pri, 'p', NOT_PLAIN)
end
local grp = f[4]
local level = level_key(waiting, pri, grp)
if st == 'waiting' and level_key(waiting, f[3], grp) ~= level and remove_waiting(waiting, f[3], id, grp) == 1 then
  local ts = tonumber(f[2]) or 0
  local n = redis.call('LLEN', level)
  local lo, hi = 0, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if (tonumber(redis.call('HGET', prefix .. redis.call('LINDEX', level, mid), 'ts')) or 0) < ts then
      lo = mid + 1
    else
      hi = mid
    end
  end
  if lo >= n then
    -- A group's list is counted, and joins the rotation if it was empty (common.lua push_waiting).
    push_waiting({[level] = {id}})
  else
    redis.call('LINSERT', level, 'BEFORE', redis.call('LINDEX', level, lo), id)
    if grp then groups_lib().pushed(string.sub(waiting, 1, -8), pri, grp, 1, false) end
  end
end
return {1}
