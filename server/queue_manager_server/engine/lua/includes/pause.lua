-- pause.lua: lifting a fairness group's pause, shared by set_group_paused.lua (ResumeGroup) and
-- resume_due.lua (a timed pause that ran out). Needs common.lua.

-- Resumes a paused group: its timer ('gpuntil') goes, its level lists with jobs rejoin the rotation at the
-- back of their levels, and one that is idle with no limits of its own is forgotten. Returns whether it was
-- paused; the caller wakes the workers ('w <queue>') once for all the groups it resumed.
local function resume_group(meta, base, grp)
  redis.call('ZREM', base .. 'gpuntil', grp)
  if redis.call('HDEL', base .. 'gpaused', grp) == 0 then return false end
  redis.call('HINCRBY', meta, 'g_paused', -1)
  redis.call('HDEL', base .. 'gpark', grp)
  groups_lib().rejoin(base, grp)
  groups_lib().idle(base, grp)
  return true
end
