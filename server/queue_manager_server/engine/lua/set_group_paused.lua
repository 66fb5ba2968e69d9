-- set_group_paused.lua: pauses or resumes one fairness group (common.lua). A paused group's jobs are still
-- added, but a claim drops its entries from the rotation; resuming puts its level lists with jobs back at
-- the back of their levels and wakes the workers (pause.lua resume_group). A resumed group with nothing
-- waiting or active and no limits of its own is forgotten. A pause may carry the time it lifts by itself
-- ('gpuntil', group -> ms; resume_due.lua lifts it, announced as ``p <queue> <ms>`` for every server's pause
-- timer); pausing again replaces that time, a plain pause or a resume clears it. This is the operator's reason
-- ('gpman'; pause.lua): a resume ends only it, so a group one of its maintenance windows holds stays paused.
-- @include common
-- @include pause
--
-- KEYS[1] meta (hash; the groups' keys are derived from it)
-- ARGV[1] group  ARGV[2] paused (1/0)  ARGV[3] resume at (Redis time, ms; 0 for none)
-- Returns: {-1} when the queue is not registered, else {waiting, active, own limits (as set_group_limits.lua
--   answers; "" for none), the queue's group limits, paused (1/0), resume at (ms; "" for none), then the
--   group's windows} (pause.lua group_row)
local meta = KEYS[1]
local grp = ARGV[1]
local d = redis.call('HMGET', meta, 'created', 'g_conc', 'g_rl_max', 'g_rl_ms', 'g_max', 'g_rl_burst')
if not d[1] then return {-1} end
local base = string.sub(meta, 1, -5)
local b, queue = string.match(base, '^(.*):{(.*)}:$')
if ARGV[2] == '1' then
  redis.call('HSET', base .. 'gpman', grp, '1')
  hold_group(meta, base, grp)
  if ARGV[3] ~= '0' then
    redis.call('ZADD', base .. 'gpuntil', ARGV[3], grp)
    redis.call('PUBLISH', b .. ':events', 'p ' .. queue .. ' ' .. ARGV[3])
  else
    redis.call('ZREM', base .. 'gpuntil', grp)
  end
elseif resume_group(meta, base, grp) then
  redis.call('PUBLISH', b .. ':events', 'w ' .. queue)
end
return group_row(base, grp, d)
