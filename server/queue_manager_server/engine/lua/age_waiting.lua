-- age_waiting.lua: anti-starvation aging. Moves the waiting jobs of the queue's bounded priority levels (meta
-- 'aging', QueueConfig.priority_bounds) that have waited their level's bound to the head of the first level,
-- so they run next, behind jobs moved by earlier calls, oldest first. Run by the priority sweep of any
-- server (components/aging.py), off the hot path: add, claim and completion never look at the bounds.
-- @include common
--
-- Each bounded level is read from its head (its oldest end) and stops at the first job still within its
-- bound, so a call costs O(moved + levels) plus a binary search of the first level for the end of the jobs
-- moved before (and a pass over those that are still there). A job's wait counts from the latest of its add
-- time, its run-at and when a promotion or a retry made it ready ('ts', 'run', 'rdy'), as metrics.lua's
-- oldest_waiting_age does. A moved job keeps its 'pri' (its priority as added) and loses its plain mark (common.lua PLAIN):
-- its level is no longer its list's, so a claim reads its priority back. A job of the first level whose
-- 'pri' is not 1 is one moved here; the scripts that look for a waiting job in the level its 'pri' names
-- look in the others after (common.lua remove_waiting). Nothing moves while the queue is paused.
--
-- A fairness group's jobs (common.lua) move within their group: to the head of the group's first-level list,
-- whose entry joins the rotation, so they run before every lower level and take turns with the other groups'
-- first-level jobs. The groups are visited by name (the 'groups' index), ARGV[4] of them per call from after
-- ARGV[3] ('': the first), those with jobs waiting only; the reply says where the next call goes on, so a
-- queue with many groups is swept in several short calls (components/aging.py), never one long one.
--
-- KEYS[1] meta (hash)  KEYS[2] waiting (lists)
-- ARGV[1] job key prefix  ARGV[2] most jobs to move in this call  ARGV[3] the group to go on after
-- ARGV[4] most groups to visit in this call
-- Returns: {now, moved, go_on}; moved = ARGV[2] when more may be due (call again); go_on: the group the next
-- call goes on after ('' when every group was visited). {-1, 0, ''}: queue not registered.
local meta, waiting = KEYS[1], KEYS[2]
local prefix, limit, after, visits = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local m = redis.call('HMGET', meta, 'created', 'paused', 'aging', 'gturn')
if not m[1] then return {-1, 0, ''} end
local now = now_ms()
if m[2] == '1' or not m[3] or m[3] == '' then return {now, 0, ''} end
local bounds = {}
for level, bound in string.gmatch(m[3], '(%d+):(%d+)') do bounds[#bounds + 1] = {level, now - tonumber(bound)} end
local moved = 0

-- Takes the jobs past their bound from the heads of the bounded levels' lists (named head .. level .. tail)
-- into due: {id, since, order, ts, level}, at most `limit` in all this call.
local function take_due(head, tail, due)
  for _, b in ipairs(bounds) do
    local list, cutoff = head .. b[1] .. tail, b[2]
    local taken, within = 0, false
    while not within and moved + #due < limit do
      local ids = redis.call('LRANGE', list, taken, taken + math.min(100, limit - moved - #due) - 1)
      if #ids == 0 then break end
      for _, id in ipairs(ids) do
        local f = redis.call('HMGET', prefix .. id, 'ts', 'run', 'rdy')
        local since = math.max(tonumber(f[1]) or 0, tonumber(f[2]) or 0, tonumber(f[3]) or 0)
        if since > cutoff then
          within = true
          break
        end
        due[#due + 1] = {id, since, #due + 1, f[1], b[1]}
        taken = taken + 1
      end
    end
    if taken > 0 then redis.call('LTRIM', list, taken, -1) end
  end
end

-- Whether a job of a first level was moved there (its priority is not the first level's).
local function moved_before(id)
  local pri = redis.call('HGET', prefix .. id, 'pri')
  return pri ~= '1'
end

-- Puts the due jobs at the head of the first level's list `first`, oldest first, behind the jobs moved there
-- before that are still waiting (they are contiguous unless a lost first-level run went back to the head
-- meanwhile, which only bends this order). Returns the ids to push to its head with LPUSH, last first.
local function line_up(first, due)
  table.sort(due, function(a, b)
    if a[2] ~= b[2] then return a[2] < b[2] end
    return a[3] < b[3]
  end)
  local ahead = {}
  local n = redis.call('LLEN', first)
  if n > 0 and moved_before(redis.call('LINDEX', first, 0)) then
    local lo, hi = 1, n  -- the first index (0-based) that is not a moved job lies in [lo, hi]
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      if moved_before(redis.call('LINDEX', first, mid)) then lo = mid + 1 else hi = mid end
    end
    ahead = redis.call('LPOP', first, lo)
  end
  local pushes = {}
  for i = #due, 1, -1 do
    local id = due[i][1]
    pushes[#pushes + 1] = id
    -- A job without 'ts' has no hash (none is created here).
    if due[i][4] then redis.call('HSET', prefix .. id, 'p', NOT_PLAIN) end
  end
  for i = #ahead, 1, -1 do pushes[#pushes + 1] = ahead[i] end
  moved = moved + #due
  return pushes
end

-- The jobs without a group.
local due = {}
take_due(waiting .. ':', '', due)
if #due > 0 then push_waiting({[waiting .. ':1'] = line_up(waiting .. ':1', due)}, 'LPUSH') end

-- The groups' jobs, from after `after`: a group's jobs stay its waiting jobs (its count does not change, the
-- levels' counts 'gw<level>' follow the lists), and its first level's list joins the rotation (a claim drops the entry of a group held back by its limits or
-- paused, which rejoins as ever). A group left with due jobs when the call's limit is reached is where the
-- next call goes on.
local go_on = ''
if m[4] and moved >= limit then
  go_on = after
elseif m[4] then
  local base = string.sub(waiting, 1, -8)
  local names = redis.call('ZRANGEBYLEX', base .. 'groups', after == '' and '-' or '(' .. after, '+',
    'LIMIT', 0, visits)
  local counts = #names > 0 and redis.call('HMGET', base .. 'gwaiting', unpack(names)) or {}
  local last = after
  for i, grp in ipairs(names) do
    if counts[i] then
      local gdue = {}
      take_due(base .. 'gwait:', ':' .. grp, gdue)
      if #gdue > 0 then
        local first = level_key(waiting, 1, grp)
        local pushes = line_up(first, gdue)
        for j = 1, #pushes, 500 do redis.call('LPUSH', first, unpack(pushes, j, math.min(j + 499, #pushes))) end
        local G = groups_lib()
        G.join(base, 1, grp, G.turns(base, 1))
        local from = {}
        for _, d in ipairs(gdue) do from[d[5]] = (from[d[5]] or 0) + 1 end
        for level, n in pairs(from) do redis.call('HINCRBY', base .. 'meta', 'gw' .. level, -n) end
        redis.call('HINCRBY', base .. 'meta', 'gw1', #gdue)
      end
      if moved >= limit then break end
    end
    last = grp
  end
  if #names == visits or moved >= limit then go_on = last end
end
return {now, moved, go_on}
