-- retry_matching.lua: runs the failed (or cancelled) jobs that match a filter again, reading at most N of
-- the state's members after a cursor (newest finish first, as ListJobs shows them) and retrying at most M.
-- As retry_jobs.lua: a workflow step's job re-opens its step (includes/requeue.lua flow_retried), and a
-- watched queue gets their events (common.lua watched).
-- @include common
-- @include requeue
-- @include filter
--
-- KEYS[1] meta (hash)  KEYS[2] waiting (lists)  KEYS[3] the state's zset (failed or cancelled)
-- ARGV[1] job key prefix  ARGV[2] state ('failed' or 'cancelled')  ARGV[3], ARGV[4] the cursor (c1, c2: a
--   score and a job id; c1 '' from the first member)  ARGV[5] most members read N  ARGV[6] most jobs retried
--   M  ARGV[7..13] the filter (includes/filter.lua read_filter)
-- Returns: {jobs moved back to waiting, 0 (none asked to stop), 1 when members follow the last one read else
--   0, the cursor to go on from (c1, c2: includes/filter.lua bulk_cursor), 0 (no flow hand-off)}, or {-1}
--   when the queue is not registered
local meta, waiting, set = KEYS[1], KEYS[2], KEYS[3]
local prefix, state, want = ARGV[1], ARGV[2], tonumber(ARGV[6])
local m = redis.call('HMGET', meta, 'created', 'evw')
if not m[1] then return {-1} end
local f = read_filter(ARGV, 7)
local ids, marks, total, skipped = members_after(state, set, read_cursor(state, ARGV[3], ARGV[4]),
  tonumber(ARGV[5]))
local now, pushes, moved, read = now_ms(), {}, {}, #ids
watched(m[2], now)
for i, id in ipairs(ids) do
  if #moved == want then
    read = i - 1
    break
  end
  if job_matches(prefix .. id, f) then
    local r = redis.call('HMGET', prefix .. id, 'pri', 'wt', 'exa', 'grp', 'flo', 'par')
    requeue(waiting, prefix, id, r[1], r[2], r[3], now, pushes, r[4])
    flow_retried(prefix, id, r[5], r[6], now)
    moved[#moved + 1] = id
  end
end
push_waiting(pushes)
zrem_all(set, moved)
publish_events(prefix, now)
-- A sorted set's cursor is the last member read, retried or not (bulk_cursor): no job was taken to track.
local c = bulk_cursor(state, marks, read, {}, ARGV[3], ARGV[4])
return {#moved, 0, total - skipped > read and 1 or 0, c[1], c[2], 0}
