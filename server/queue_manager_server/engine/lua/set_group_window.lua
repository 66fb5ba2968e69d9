-- set_group_window.lua: holds a fairness group paused while one of its maintenance windows holds, and frees
-- it after (queue_manager_server/windows.py computes the span from the group's windows,
-- GroupLimits.maintenance_windows), as set_window.lua does for a queue: the window is the group's reason
-- 'gpwin' (when it ends) beside an operator's 'gpman' (pause.lua), so a window ending never lifts a hand
-- pause. A compare-and-set: only for the windows the span was computed from ('gwin', written by
-- set_group_limits.lua) and while the span is current by this script's clock, so several servers may apply
-- it at once and a late one writes nothing stale. The group's next boundary (when the window it is in ends,
-- or the next starts) goes into 'gwb', which every server's pause timer reads for the queue; a change is
-- announced (``p <queue> <ms>``), and freeing the group wakes the queue's workers.
-- @include common
-- @include pause
--
-- KEYS[1] meta (hash; the groups' keys are derived from it)
-- ARGV[1] group  ARGV[2] its windows as stored ('gwin'; "" for none)  ARGV[3] start of the span holding now
-- or the next (ms; 0: none ever)  ARGV[4] its end (ms)  ARGV[5] the start of the span after it (ms; 0: none)
-- Returns: {code, now, next boundary (-1 for none), then the group as pause.lua group_row gives it}; code
--   1 changed, 0 unchanged, -1 queue not registered, -2 stale (the windows changed, or the span ended:
--   compute again)
local meta = KEYS[1]
local grp = ARGV[1]
local now = now_ms()
local d = redis.call('HMGET', meta, 'created', 'g_conc', 'g_rl_max', 'g_rl_ms', 'g_max', 'g_rl_burst')
if not d[1] then return {-1, now, -1} end
local base = string.sub(meta, 1, -5)
local start, stop, after = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if (redis.call('HGET', base .. 'gwin', grp) or '') ~= ARGV[2] or (start > 0 and stop <= now) then
  return {-2, now, -1}
end
local inside = start > 0 and start <= now
local until_ms, following = '', ''
if inside then until_ms = string.format('%d', stop) end
if inside and after > 0 then following = string.format('%d', after) end
if not inside and start > 0 then following = string.format('%d', start) end
local boundary = -1
if inside then boundary = stop elseif start > 0 then boundary = start end
local was = redis.call('HGET', base .. 'gpwin', grp) or ''
local was_next = redis.call('HGET', base .. 'gwnext', grp) or ''
-- An operator's pause, also one a server from before the pause reasons gave (its flag alone), is marked
-- so the window's end does not take it for the window's.
if hand_paused(base, grp) then redis.call('HSET', base .. 'gpman', grp, '1') end
local freed = false
if inside then
  redis.call('HSET', base .. 'gpwin', grp, until_ms)
  hold_group(meta, base, grp)
elseif was ~= '' then
  redis.call('HDEL', base .. 'gpwin', grp)
  if redis.call('HEXISTS', base .. 'gpman', grp) == 0 then freed = free_group(meta, base, grp) end
end
if following ~= '' then
  redis.call('HSET', base .. 'gwnext', grp, following)
else
  redis.call('HDEL', base .. 'gwnext', grp)
end
if boundary > 0 then
  redis.call('ZADD', base .. 'gwb', boundary, grp)
else
  redis.call('ZREM', base .. 'gwb', grp)
end
local changed = was ~= until_ms or was_next ~= following
local b, queue = string.match(base, '^(.*):{(.*)}:$')
if changed and boundary > 0 then
  redis.call('PUBLISH', b .. ':events', 'p ' .. queue .. ' ' .. string.format('%d', boundary))
end
if freed then redis.call('PUBLISH', b .. ':events', 'w ' .. queue) end
local code = 0
if changed then code = 1 end
return {code, now, boundary, unpack(group_row(base, grp, d))}
