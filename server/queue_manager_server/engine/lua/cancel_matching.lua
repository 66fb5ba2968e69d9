-- cancel_matching.lua: cancels the jobs of one state that match a filter, reading at most N of the state's
-- members after a cursor and cancelling at most M. A waiting (or paused) or delayed job ends cancelled at
-- once; an active one is marked cancel-requested and the server holding its lease told to stop the run, as
-- cancel_job.lua does for one job.
-- @include common
-- @include filter
--
-- KEYS[1] meta (hash)  KEYS[2] waiting (lists)  KEYS[3] the state's key (the waiting key, delayed or active)
-- ARGV[1] job key prefix  ARGV[2] state ('waiting', 'delayed' or 'active')  ARGV[3], ARGV[4] the cursor (c1,
--   c2; c1 '' from the first member: includes/filter.lua read_cursor)  ARGV[5] most members read N
--   ARGV[6] most jobs cancelled or asked to stop M  ARGV[7..13] the filter (includes/filter.lua
--   read_filter)  ARGV[14] reason ("" = none)  ARGV[15] events channel  ARGV[16] queue name
-- Returns: {jobs cancelled now, active jobs asked to stop, 1 when members follow the last one read else 0,
--   the cursor to go on from (c1, c2: includes/filter.lua bulk_cursor), 0 (no flow hand-off)}, or {-1} when
--   the queue is not registered
local meta, waiting, key = KEYS[1], KEYS[2], KEYS[3]
local prefix, state, want = ARGV[1], ARGV[2], tonumber(ARGV[6])
local reason, channel, queue = ARGV[14], ARGV[15], ARGV[16]
-- The existence check reads the job events' watch deadline too (common.lua watched).
local m = redis.call('HMGET', meta, 'created', 'evw')
if not m[1] then return {-1} end
local now = now_ms()
watched(m[2], now)
local f = read_filter(ARGV, 7)
local ids, marks, total, skipped, lists = members_after(state, key, read_cursor(state, ARGV[3], ARGV[4]),
  tonumber(ARGV[5]))
local picked, taken, gone, grps, requested, read = {}, {}, {}, {}, 0, #ids
for i, id in ipairs(ids) do
  if #taken + requested == want then
    read = i - 1
    break
  end
  local jkey = prefix .. id
  if job_matches(jkey, f) then
    if state == 'active' then
      local tok = redis.call('HGET', jkey, 'tok')
      redis.call('HSET', jkey, 'cxr', '1')
      local why = 'cancelled'
      if reason ~= '' then
        redis.call('HSET', jkey, 'cxm', reason)
        why = 'cancelled: ' .. reason
      end
      redis.call('PUBLISH', channel, 'c ' .. queue .. ' ' .. id .. ' ' .. (tok or '') .. ' ' .. why)
      requested = requested + 1
    else
      picked[#picked + 1] = i
      taken[#taken + 1] = id
      gone[i] = true
      grps[i] = redis.call('HGET', jkey, 'grp') or nil
    end
  end
end
if state == 'waiting' then
  take_waiting(waiting, lists, marks, picked, grps)
else
  zrem_all(key, taken)
end
for _, id in ipairs(taken) do
  if reason ~= '' then redis.call('HSET', prefix .. id, 'cxm', reason) end
  finish_cancelled(meta, prefix, id, now)
end
publish_events(prefix, now)
local c = bulk_cursor(state, marks, read, gone, ARGV[3], ARGV[4])
return {#taken, requested, total - skipped > read and 1 or 0, c[1], c[2], 0}
