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
-- KEYS[1] meta (hash)  KEYS[2] waiting (lists)
-- ARGV[1] job key prefix  ARGV[2] most jobs to move in this call
-- Returns: {now, moved}; moved = ARGV[2] when more may be due (call again). {-1, 0}: queue not registered.
local meta, waiting = KEYS[1], KEYS[2]
local prefix, limit = ARGV[1], tonumber(ARGV[2])
local m = redis.call('HMGET', meta, 'created', 'paused', 'aging')
if not m[1] then return {-1, 0} end
local now = now_ms()
if m[2] == '1' or not m[3] or m[3] == '' then return {now, 0} end

-- The jobs past their bound: {id, since, order} from the head of each bounded level.
local due = {}
-- Whether a job of the first level was moved there (its priority is not the first level's).
local function moved_before(id)
  local pri = redis.call('HGET', prefix .. id, 'pri')
  return pri ~= '1'
end

for level, bound in string.gmatch(m[3], '(%d+):(%d+)') do
  local list = waiting .. ':' .. level
  local cutoff = now - tonumber(bound)
  local taken, within = 0, false
  while not within and #due < limit do
    local ids = redis.call('LRANGE', list, taken, taken + math.min(100, limit - #due) - 1)
    if #ids == 0 then break end
    for _, id in ipairs(ids) do
      local f = redis.call('HMGET', prefix .. id, 'ts', 'run', 'rdy')
      local since = math.max(tonumber(f[1]) or 0, tonumber(f[2]) or 0, tonumber(f[3]) or 0)
      if since > cutoff then
        within = true
        break
      end
      due[#due + 1] = {id, since, #due + 1, f[1]}
      taken = taken + 1
    end
  end
  if taken > 0 then redis.call('LTRIM', list, taken, -1) end
end
if #due == 0 then return {now, 0} end
table.sort(due, function(a, b)
  if a[2] ~= b[2] then return a[2] < b[2] end
  return a[3] < b[3]
end)

-- The jobs moved before and still waiting lead the first level: find where they end (they are contiguous
-- unless a lost CRITICAL run went back to the head meanwhile, which only bends this order).
local first = waiting .. ':1'
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

-- Pushed to the head last first: the jobs moved before, then these oldest first.
local pushes = {}
for i = #due, 1, -1 do
  local id = due[i][1]
  pushes[#pushes + 1] = id
  -- A job without 'ts' has no hash (none is created here).
  if due[i][4] then redis.call('HSET', prefix .. id, 'p', NOT_PLAIN) end
end
for i = #ahead, 1, -1 do pushes[#pushes + 1] = ahead[i] end
push_waiting({[first] = pushes}, 'LPUSH')
return {now, #due}
