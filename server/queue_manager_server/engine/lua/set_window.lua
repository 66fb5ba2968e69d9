-- set_window.lua: holds a queue paused while a maintenance window holds, and frees it after
-- (queue_manager_server/windows.py computes the span). The queue is paused while any reason holds: an
-- operator's pause ('pman', set_paused.lua) or a window ('pwin': when it ends); 'paused', which every other
-- script reads, says whether one does. A compare-and-set: only for the windows the span was computed from
-- (meta 'mwin', written by the registration) and while the span is current by this script's clock, so
-- several servers may apply it at once and a late one writes nothing stale. A change is announced
-- (``p <queue> <next boundary ms>``) for every server's pause timer; freeing the queue wakes its workers.
-- @include common
--
-- KEYS[1] meta (hash)
-- ARGV[1] the windows' digest ("" for none)  ARGV[2] start of the span holding now or the next (ms; 0: none
-- ever)  ARGV[3] its end (ms)  ARGV[4] the start of the span after it (ms; 0: none)
-- Returns: {code, now, next boundary (when the window ends, or the next starts; -1 for none)}; code 1 changed,
--   0 unchanged, -1 queue not registered, -2 stale (the windows changed, or the span ended: compute again)
local meta = KEYS[1]
local m = redis.call('HMGET', meta, 'created', 'mwin', 'pwin', 'pman', 'paused', 'mwnext')
local now = now_ms()
if not m[1] then return {-1, now, -1} end
local start, stop, after = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if (m[2] or '') ~= ARGV[1] or (start > 0 and stop <= now) then return {-2, now, -1} end
local inside = start > 0 and start <= now
local until_ms, following = '', ''
if inside then until_ms = string.format('%d', stop) end
if inside and after > 0 then following = string.format('%d', after) end
if not inside and start > 0 then following = string.format('%d', start) end
local boundary = -1
if inside then boundary = stop elseif start > 0 then boundary = start end
-- An operator's pause: also one a server from before the pause reasons gave (its flag alone).
local manual = m[4] == '1' or (m[5] == '1' and not m[3])
if manual then redis.call('HSET', meta, 'pman', '1') end
if inside then redis.call('HSET', meta, 'pwin', until_ms) else redis.call('HDEL', meta, 'pwin') end
if following ~= '' then
  redis.call('HSET', meta, 'mwnext', following)
else
  redis.call('HDEL', meta, 'mwnext')
end
if boundary > 0 then
  redis.call('HSET', meta, 'mwb', string.format('%d', boundary))
else
  redis.call('HDEL', meta, 'mwb')
end
redis.call('HSET', meta, 'mwapplied', ARGV[1])
local paused = '0'
if manual or inside then paused = '1' end
redis.call('HSET', meta, 'paused', paused)
local changed = (m[3] or '') ~= until_ms or (m[6] or '') ~= following
local b, queue = string.match(meta, '^(.*):{(.*)}:meta$')
if changed and boundary > 0 then
  redis.call('PUBLISH', b .. ':events', 'p ' .. queue .. ' ' .. string.format('%d', boundary))
end
if m[5] == '1' and paused == '0' then redis.call('PUBLISH', b .. ':events', 'w ' .. queue) end
local code = 0
if changed then code = 1 end
return {code, now, boundary}
