-- cancel_matching.lua: cancels the jobs of one state that match a filter, reading at most N of the state's
-- members from a position and cancelling at most M. A waiting (or paused) or delayed job ends cancelled at
-- once; an active one is marked cancel-requested and the server holding its lease told to stop the run, as
-- cancel_job.lua does for one job.
-- @include common
-- @include filter
--
-- KEYS[1] meta (hash)  KEYS[2] waiting (lists)  KEYS[3] the state's key (the waiting key, delayed or active)
-- ARGV[1] job key prefix  ARGV[2] state ('waiting', 'delayed' or 'active')  ARGV[3] position  ARGV[4] most
--   members read N  ARGV[5] most jobs cancelled M  ARGV[6..12] the filter (includes/filter.lua
--   read_filter)  ARGV[13] reason ("" = none)  ARGV[14] events channel  ARGV[15] queue name
-- Returns: {jobs cancelled now, active jobs asked to stop, position to continue from (the cancelled left
--   the state), the state's size after the call}, or {-1} when the queue is not registered
local meta, waiting, key = KEYS[1], KEYS[2], KEYS[3]
local prefix, state, start, want = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[5])
local reason, channel, queue = ARGV[13], ARGV[14], ARGV[15]
-- The existence check reads the job events' watch deadline too (common.lua watched).
local m = redis.call('HMGET', meta, 'created', 'evw')
if not m[1] then return {-1} end
local now = now_ms()
watched(m[2], now)
local f = read_filter(ARGV, 6)
local ids, lists, at, total = members_from(state, key, start, tonumber(ARGV[4]))
local picked, taken, grps, requested, read = {}, {}, {}, 0, #ids
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
      grps[i] = redis.call('HGET', jkey, 'grp') or nil
    end
  end
end
if state == 'waiting' then
  take_waiting(waiting, lists, at, picked, grps)
else
  zrem_all(key, taken)
end
for _, id in ipairs(taken) do
  if reason ~= '' then redis.call('HSET', prefix .. id, 'cxm', reason) end
  finish_cancelled(meta, prefix, id, now)
end
publish_events(prefix, now)
return {#taken, requested, start + read - #taken, total - #taken}
