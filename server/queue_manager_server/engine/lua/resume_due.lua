-- resume_due.lua: lifts the queue's timed pause and its groups' whose time has come (set_paused.lua,
-- set_group_paused.lua), and says when the next one comes. The queue stays paused while a maintenance
-- window holds it ('pwin', set_window.lua), and a group while one of its own does ('gpwin', pause.lua). Atomic, and only a pause whose own time has
-- passed is lifted, so when several servers' pause timers (components/pause_timer.py) fire at once the
-- first lifts it and the others find nothing: a pause given again meanwhile (plain, or with a later time)
-- stays. What it resumes wakes the workers at once (``w <queue>``), as ResumeQueue and ResumeGroup do.
-- @include common
-- @include pause
--
-- KEYS[1] meta (hash; the groups' keys are derived from it)
-- ARGV[1] most groups resumed per call
-- Returns: {now, pauses lifted (the queue's and its groups'), next resume time (ms; -1 for none; one not
--   after now when more groups were due than one call resumes)}
local meta = KEYS[1]
local m = redis.call('HMGET', meta, 'created', 'paused_until', 'pwin')
local now = now_ms()
if not m[1] then return {now, 0, -1} end
local base = string.sub(meta, 1, -5)
local lifted, next_due, freed = 0, -1, false
local until_ms = tonumber(m[2])
if until_ms and until_ms <= now then
  redis.call('HDEL', meta, 'paused_until', 'pman')
  if not m[3] then
    redis.call('HSET', meta, 'paused', '0')
    freed = true
  end
  lifted = 1
elseif until_ms then
  next_due = until_ms
end
local due = redis.call('ZRANGEBYSCORE', base .. 'gpuntil', '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, grp in ipairs(due) do
  -- A group one of its maintenance windows holds stays paused (pause.lua).
  if resume_group(meta, base, grp) then freed = true end
  lifted = lifted + 1
end
local first = redis.call('ZRANGE', base .. 'gpuntil', 0, 0, 'WITHSCORES')
if first[2] and (next_due < 0 or tonumber(first[2]) < next_due) then next_due = tonumber(first[2]) end
if freed then
  local b, queue = string.match(base, '^(.*):{(.*)}:$')
  redis.call('PUBLISH', b .. ':events', 'w ' .. queue)
end
return {now, lifted, next_due}
