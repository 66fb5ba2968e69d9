-- set_group_limits.lua: sets or clears the limits of one fairness group (common.lua), which replace the
-- queue's group limits for it. A group its concurrency limit held back takes turns again at once (a claim
-- that finds it still at its limit holds it back again); a group with nothing waiting or active whose own
-- limits are cleared is forgotten.
-- @include common
--
-- KEYS[1] meta (hash; the groups' keys are derived from it)
-- ARGV[1] group  ARGV[2] clear (1/0)  ARGV[3] concurrency  ARGV[4] rate max  ARGV[5] rate ms
-- ARGV[6] max size (jobs of the group waiting; 0: none)  ARGV[7] rate burst (0: the default)
-- Returns: {-1} when the queue is not registered, else {waiting, active, own limits ("" after a clear),
--   the queue's group limits, paused (1/0), resume at (ms; "" for none: set_group_paused.lua)}, both limits as "concurrency rate-max rate-ms max-size burst". A max
--   size of its own marks
--   the queue (meta 'g_max_own'), so adds look for one (includes/add.lua size_limits).
local meta = KEYS[1]
local grp = ARGV[1]
local d = redis.call('HMGET', meta, 'created', 'g_conc', 'g_rl_max', 'g_rl_ms', 'g_max', 'g_rl_burst')
if not d[1] then return {-1} end
local base = string.sub(meta, 1, -5)
local own = ''
if ARGV[2] == '1' then
  redis.call('HDEL', base .. 'glimits', grp)
  groups_lib().idle(base, grp)
else
  -- The burst only when one is given: an older server reads exactly four fields (its max size), so limits
  -- without a burst stay readable by it during a rolling upgrade.
  own = ARGV[3] .. ' ' .. ARGV[4] .. ' ' .. ARGV[5] .. ' ' .. ARGV[6]
  if (tonumber(ARGV[7]) or 0) > 0 then own = own .. ' ' .. ARGV[7] end
  redis.call('HSET', base .. 'glimits', grp, own)
  if tonumber(ARGV[6]) > 0 then redis.call('HSET', meta, 'g_max_own', '1') end
  redis.call('ZADD', base .. 'groups', 'NX', 0, grp)
end
-- A changed rate starts from a full bucket.
redis.call('HDEL', base .. 'gtok', grp)
if redis.call('HDEL', base .. 'gpark', grp) == 1 then
  groups_lib().rejoin(base, grp)
  local b, queue = string.match(base, '^(.*):{(.*)}:$')
  redis.call('PUBLISH', b .. ':events', 'w ' .. queue)
end
local c = redis.call('HMGET', base .. 'gwaiting', grp)[1]
local a = redis.call('HMGET', base .. 'gact', grp)[1]
return {tonumber(c) or 0, math.max(tonumber(a) or 0, 0), own,
  (d[2] or '0') .. ' ' .. (d[3] or '0') .. ' ' .. (d[4] or '0') .. ' ' .. (d[5] or '0') .. ' ' .. (d[6] or '0'),
  redis.call('HEXISTS', base .. 'gpaused', grp), redis.call('ZSCORE', base .. 'gpuntil', grp) or ''}
