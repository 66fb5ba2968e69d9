-- set_paused.lua: an operator pauses or resumes a queue. The queue is paused while any reason holds: this
-- pause ('pman') or a maintenance window ('pwin', set_window.lua); 'paused', which every other script reads,
-- says whether one does, so a resume inside a window ends only the operator's pause. A pause may carry the
-- time it lifts by itself (resume_due.lua lifts it); pausing again replaces that time, a plain pause or a
-- resume clears it. The time is announced (``p <queue> <ms>``) so every server's pause timer
-- (components/pause_timer.py) arms for it.
--
-- KEYS[1] meta (hash)
-- ARGV[1] paused (1/0)  ARGV[2] resume at (Redis time, ms; 0 for none)
-- Returns: 1 ok, -1 queue not registered
local meta = KEYS[1]
if redis.call('EXISTS', meta) == 0 then return -1 end
if ARGV[1] == '1' then
  redis.call('HSET', meta, 'pman', '1', 'paused', '1')
else
  redis.call('HDEL', meta, 'pman')
  local window = redis.call('HEXISTS', meta, 'pwin')
  redis.call('HSET', meta, 'paused', tostring(window))
end
if ARGV[1] == '1' and ARGV[2] ~= '0' then
  redis.call('HSET', meta, 'paused_until', ARGV[2])
  local b, queue = string.match(meta, '^(.*):{(.*)}:meta$')
  redis.call('PUBLISH', b .. ':events', 'p ' .. queue .. ' ' .. ARGV[2])
else
  redis.call('HDEL', meta, 'paused_until')
end
return 1
