-- remove_matching.lua: deletes the jobs of one state (not active) that match a filter, with their log
-- lines, releasing their dedup keys, as remove_job.lua does for one job; reads at most N of the state's
-- members after a cursor and removes at most M. An unfinished job that parents wait for (WaitForChildren)
-- ends for them as removed (common.lua on_removed).
-- @include common
-- @include filter
--
-- KEYS[1] meta (hash)  KEYS[2] waiting (lists)  KEYS[3] the state's key (the waiting key, or the state's
--   zset: delayed, completed, failed or cancelled)
-- ARGV[1] job key prefix  ARGV[2] state ('waiting' or the zset's)  ARGV[3], ARGV[4] the cursor (c1, c2; c1 ''
--   from the first member: includes/filter.lua read_cursor)  ARGV[5] most members read N  ARGV[6] most jobs
--   removed M  ARGV[7..13] the filter (includes/filter.lua read_filter)
-- Returns: {jobs removed, 0 (none asked to stop), 1 when members follow the last one read else 0, the cursor
--   to go on from (c1, c2: includes/filter.lua bulk_cursor), flow hand-offs queued}, or {-1} when the queue
--   is not registered
local meta, waiting, key = KEYS[1], KEYS[2], KEYS[3]
local prefix, state, want = ARGV[1], ARGV[2], tonumber(ARGV[6])
-- The existence check reads the job events' watch deadline too (common.lua watched).
local m = redis.call('HMGET', meta, 'created', 'evw')
if not m[1] then return {-1} end
local now = now_ms()
watched(m[2], now)
local f = read_filter(ARGV, 7)
local ids, marks, total, skipped, lists = members_after(state, key, read_cursor(state, ARGV[3], ARGV[4]),
  tonumber(ARGV[5]))
local picked, taken, gone, grps, read = {}, {}, {}, {}, #ids
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
    gone[i] = true
    grps[i] = r[4] or nil
  end
end
if state == 'waiting' then
  take_waiting(waiting, lists, marks, picked, grps)
else
  zrem_all(key, taken)
end
publish_events(prefix, now)
local c = bulk_cursor(state, marks, read, gone, ARGV[3], ARGV[4])
return {#taken, 0, total - skipped > read and 1 or 0, c[1], c[2], REMOVED.handed}
