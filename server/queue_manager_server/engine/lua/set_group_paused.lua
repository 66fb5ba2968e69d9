-- set_group_paused.lua: pauses or resumes one fairness group (common.lua). A paused group's jobs are still
-- added, but a claim drops its entries from the rotation; resuming puts its level lists with jobs back at
-- the back of their levels and wakes the workers. A resumed group with nothing waiting or active and no
-- limits of its own is forgotten.
-- @include common
--
-- KEYS[1] meta (hash; the groups' keys are derived from it)
-- ARGV[1] group  ARGV[2] paused (1/0)
-- Returns: {-1} when the queue is not registered, else {waiting, active, own limits (as set_group_limits.lua
--   answers; "" for none), the queue's group limits, paused (1/0)}
local meta = KEYS[1]
local grp = ARGV[1]
local d = redis.call('HMGET', meta, 'created', 'g_conc', 'g_rl_max', 'g_rl_ms', 'g_max', 'g_rl_burst')
if not d[1] then return {-1} end
local base = string.sub(meta, 1, -5)
if ARGV[2] == '1' then
  if redis.call('HSET', base .. 'gpaused', grp, '1') == 1 then redis.call('HINCRBY', meta, 'g_paused', 1) end
  redis.call('ZADD', base .. 'groups', 'NX', 0, grp)
elseif redis.call('HDEL', base .. 'gpaused', grp) == 1 then
  redis.call('HINCRBY', meta, 'g_paused', -1)
  redis.call('HDEL', base .. 'gpark', grp)
  groups_lib().rejoin(base, grp)
  local b, queue = string.match(base, '^(.*):{(.*)}:$')
  redis.call('PUBLISH', b .. ':events', 'w ' .. queue)
  groups_lib().idle(base, grp)
end
local c = redis.call('HGET', base .. 'gwaiting', grp)
local a = redis.call('HGET', base .. 'gact', grp)
return {tonumber(c) or 0, math.max(tonumber(a) or 0, 0), redis.call('HGET', base .. 'glimits', grp) or '',
  (d[2] or '0') .. ' ' .. (d[3] or '0') .. ' ' .. (d[4] or '0') .. ' ' .. (d[5] or '0') .. ' ' .. (d[6] or '0'),
  redis.call('HEXISTS', base .. 'gpaused', grp)}
