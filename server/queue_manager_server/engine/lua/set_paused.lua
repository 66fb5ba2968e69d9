-- set_paused.lua: pauses or resumes a queue. A pause may carry the time it lifts by itself (resume_due.lua
-- lifts it); pausing again replaces that time, a plain pause or a resume clears it. The time is announced
-- (``p <queue> <ms>``) so every server's pause timer (components/pause_timer.py) arms for it.
--
-- KEYS[1] meta (hash)
-- ARGV[1] paused (1/0)  ARGV[2] resume at (Redis time, ms; 0 for none)
-- Returns: 1 ok, -1 queue not registered
local meta = KEYS[1]
if redis.call('EXISTS', meta) == 0 then return -1 end
redis.call('HSET', meta, 'paused', ARGV[1])
if ARGV[1] == '1' and ARGV[2] ~= '0' then
  redis.call('HSET', meta, 'paused_until', ARGV[2])
  local b, queue = string.match(meta, '^(.*):{(.*)}:meta$')
  redis.call('PUBLISH', b .. ':events', 'p ' .. queue .. ' ' .. ARGV[2])
else
  redis.call('HDEL', meta, 'paused_until')
end
return 1
