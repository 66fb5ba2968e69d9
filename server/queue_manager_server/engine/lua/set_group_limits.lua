-- set_group_limits.lua: sets or clears the limits of one fairness group (common.lua), which replace the
-- queue's group limits for it. A group its concurrency limit held back takes turns again at once (a claim
-- that finds it still at its limit holds it back again); a group with nothing waiting or active whose own
-- limits are cleared is forgotten. The group's maintenance windows (GroupLimits.maintenance_windows) are
-- kept apart from the limits string ('gwin': what the server serialized, which set_group_window.lua compares
-- with); new windows are due at once ('gwb' score 0: the server applies them after this, or any pause
-- timer's rescan does), and windows taken away (a clear, or limits given without them) free the group
-- from a window holding it unless an operator's pause holds it too (pause.lua).
-- @include common
-- @include pause
--
-- KEYS[1] meta (hash; the groups' keys are derived from it)
-- ARGV[1] group  ARGV[2] clear (1/0)  ARGV[3] concurrency  ARGV[4] rate max  ARGV[5] rate ms
-- ARGV[6] max size (jobs of the group waiting; 0: none)  ARGV[7] rate burst (0: the default)
-- ARGV[8] its maintenance windows, serialized ("" for none)
-- Returns: {-1} when the queue is not registered, else the group as pause.lua group_row gives it (own
--   limits "" after a clear). A max size of its own marks the queue (meta 'g_max_own'), so adds look for
--   one (includes/add.lua size_limits).
local meta = KEYS[1]
local grp = ARGV[1]
local d = redis.call('HMGET', meta, 'created', 'g_conc', 'g_rl_max', 'g_rl_ms', 'g_max', 'g_rl_burst')
if not d[1] then return {-1} end
local base = string.sub(meta, 1, -5)
local windows, wake = ARGV[8], false
if ARGV[2] == '1' then windows = '' end
if windows ~= (redis.call('HGET', base .. 'gwin', grp) or '') then
  if windows ~= '' then
    redis.call('HSET', base .. 'gwin', grp, windows)
    redis.call('ZADD', base .. 'gwb', 0, grp)
  else
    redis.call('HDEL', base .. 'gwin', grp)
    redis.call('HDEL', base .. 'gwnext', grp)
    redis.call('ZREM', base .. 'gwb', grp)
    if redis.call('HDEL', base .. 'gpwin', grp) == 1 and redis.call('HEXISTS', base .. 'gpman', grp) == 0 then
      wake = free_group(meta, base, grp)
    end
  end
end
if ARGV[2] == '1' then
  redis.call('HDEL', base .. 'glimits', grp)
  groups_lib().idle(base, grp)
else
  -- The burst only when one is given: an older server reads exactly four fields (its max size), so limits
  -- without a burst stay readable by it during a rolling upgrade.
  local own = ARGV[3] .. ' ' .. ARGV[4] .. ' ' .. ARGV[5] .. ' ' .. ARGV[6]
  if (tonumber(ARGV[7]) or 0) > 0 then own = own .. ' ' .. ARGV[7] end
  redis.call('HSET', base .. 'glimits', grp, own)
  if tonumber(ARGV[6]) > 0 then redis.call('HSET', meta, 'g_max_own', '1') end
  redis.call('ZADD', base .. 'groups', 'NX', 0, grp)
end
-- A changed rate starts from a full bucket.
redis.call('HDEL', base .. 'gtok', grp)
if redis.call('HDEL', base .. 'gpark', grp) == 1 then
  groups_lib().rejoin(base, grp)
  wake = true
end
if wake then
  local b, queue = string.match(base, '^(.*):{(.*)}:$')
  redis.call('PUBLISH', b .. ':events', 'w ' .. queue)
end
return group_row(base, grp, d)
