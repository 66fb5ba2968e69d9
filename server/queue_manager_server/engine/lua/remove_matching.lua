-- remove_matching.lua: deletes the jobs of one state (not active) that match a filter, with their log
-- lines, releasing their dedup keys, as remove_job.lua does for one job; reads at most N of the state's
-- members from a position and removes at most M. An unfinished job that parents wait for (WaitForChildren)
-- ends for them as removed (common.lua on_removed).
-- @include common
-- @include filter
--
-- KEYS[1] meta (hash)  KEYS[2] waiting (lists)  KEYS[3] the state's key (the waiting key, or the state's
--   zset: delayed, completed, failed or cancelled)
-- ARGV[1] job key prefix  ARGV[2] state ('waiting' or the zset's)  ARGV[3] position  ARGV[4] most members
--   read N  ARGV[5] most jobs removed M  ARGV[6..12] the filter (includes/filter.lua read_filter)
-- Returns: {jobs removed, position to continue from (the removed left the state), the state's size after
--   the call, flow hand-offs queued}, or {-1} when the queue is not registered
local meta, waiting, key = KEYS[1], KEYS[2], KEYS[3]
local prefix, state, start, want = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[5])
-- The existence check reads the job events' watch deadline too (common.lua watched).
local m = redis.call('HMGET', meta, 'created', 'evw')
if not m[1] then return {-1} end
local now = now_ms()
watched(m[2], now)
local f = read_filter(ARGV, 6)
local ids, lists, at, total = members_from(state, key, start, tonumber(ARGV[4]))
local picked, taken, grps, read = {}, {}, {}, #ids
local unfinished = state == 'waiting' or state == 'delayed'
for i, id in ipairs(ids) do
  if #taken == want then
    read = i - 1
    break
  end
  local jkey = prefix .. id
  if job_matches(jkey, f) then
    local r = redis.call('HMGET', jkey, 'ddk', 'ddt', 'wt', 'grp', 'ewk', 'flo')
    -- A key held until the job finishes is free once it is removed; a ttl'd key holds for its window.
    if r[1] and not r[2] then release_dedup(prefix, id, r[1]) end
    if r[5] then event_wait_drop(prefix, id, r[5]) end
    if unfinished then on_removed(prefix, id, jkey, r[6], 'removed by RemoveJobs') end
    notify_job(prefix, id, jkey, 'removed', r[3])
    if EVENTS then job_event(prefix, id, 11) end
    redis.call('DEL', jkey, job_logs_key(prefix, id))
    picked[#picked + 1] = i
    taken[#taken + 1] = id
    grps[i] = r[4] or nil
  end
end
if state == 'waiting' then
  take_waiting(waiting, lists, at, picked, grps)
else
  zrem_all(key, taken)
end
publish_events(prefix, now)
return {#taken, start + read - #taken, total - #taken, REMOVED.handed}
