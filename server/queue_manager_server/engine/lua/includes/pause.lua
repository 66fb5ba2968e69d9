-- pause.lua: a fairness group's pause and its reasons, shared by set_group_paused.lua (PauseGroup,
-- ResumeGroup), resume_due.lua (a timed pause that ran out), set_group_window.lua (a group's maintenance
-- window) and set_group_limits.lua (windows taken away). Needs common.lua.
--
-- A group is paused ('gpaused', counted in meta 'g_paused': what claims read) while a reason holds: an
-- operator's pause ('gpman'; 'gpuntil' when it is timed) or one of its maintenance windows ('gpwin': when
-- it ends), as the queue's 'pman' and 'pwin' (set_window.lua). So a window ending never lifts a hand pause,
-- and a resume by hand inside a window ends only the hand's pause.

-- Holds a group paused (for a reason its caller records).
local function hold_group(meta, base, grp)
  if redis.call('HSET', base .. 'gpaused', grp, '1') == 1 then redis.call('HINCRBY', meta, 'g_paused', 1) end
  redis.call('ZADD', base .. 'groups', 'NX', 0, grp)
end

-- Whether an operator's pause holds the group: 'gpman', or a pause a server from before the pause reasons
-- gave (its 'gpaused' flag alone, no window recorded).
local function hand_paused(base, grp)
  if redis.call('HEXISTS', base .. 'gpman', grp) == 1 then return true end
  return redis.call('HEXISTS', base .. 'gpaused', grp) == 1 and redis.call('HEXISTS', base .. 'gpwin', grp) == 0
end

-- Frees a paused group: its level lists with jobs rejoin the rotation at the back of their levels, and one
-- that is idle with no limits of its own is forgotten. Returns whether it was paused.
local function free_group(meta, base, grp)
  if redis.call('HDEL', base .. 'gpaused', grp) == 0 then return false end
  redis.call('HINCRBY', meta, 'g_paused', -1)
  redis.call('HDEL', base .. 'gpark', grp)
  groups_lib().rejoin(base, grp)
  groups_lib().idle(base, grp)
  return true
end

-- Ends an operator's pause of the group (its timer 'gpuntil' too); the group stays paused while one of its
-- windows holds it. Returns whether the group was freed; the caller wakes the workers ('w <queue>') once
-- for all the groups it freed.
local function resume_group(meta, base, grp)
  redis.call('ZREM', base .. 'gpuntil', grp)
  redis.call('HDEL', base .. 'gpman', grp)
  if redis.call('HEXISTS', base .. 'gpwin', grp) == 1 then return false end
  return free_group(meta, base, grp)
end

-- A group's maintenance windows as the group scripts answer them: {when the window holding it ends (ms; ""
-- outside one), when its next window starts (ms; "" for none), its windows ('gwin': a GroupLimits message
-- holding only them, as the server serialized it; "" for none)}.
local function group_windows(base, grp)
  return {redis.call('HGET', base .. 'gpwin', grp) or '', redis.call('HGET', base .. 'gwnext', grp) or '',
    redis.call('HGET', base .. 'gwin', grp) or ''}
end

-- One group as set_group_paused.lua, set_group_limits.lua and set_group_window.lua answer it, d being the
-- meta fields {created, g_conc, g_rl_max, g_rl_ms, g_max, g_rl_burst}: {waiting, active, own limits
-- ("concurrency rate-max rate-ms max-size burst"; "" for none), the queue's group limits (same form), paused
-- (1/0), resume at (ms; "" for none), then group_windows}.
local function group_row(base, grp, d)
  local c = redis.call('HGET', base .. 'gwaiting', grp)
  local a = redis.call('HGET', base .. 'gact', grp)
  return {tonumber(c) or 0, math.max(tonumber(a) or 0, 0), redis.call('HGET', base .. 'glimits', grp) or '',
    (d[2] or '0') .. ' ' .. (d[3] or '0') .. ' ' .. (d[4] or '0') .. ' ' .. (d[5] or '0') .. ' ' .. (d[6] or '0'),
    redis.call('HEXISTS', base .. 'gpaused', grp), redis.call('ZSCORE', base .. 'gpuntil', grp) or '',
    unpack(group_windows(base, grp))}
end
