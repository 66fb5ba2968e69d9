-- wf_starting.lua: marks a workflow run as starting (the janitor starts the first steps of a run still marked
-- after a grace period: its creator died before adding their jobs), at Redis's own time.
-- @include common
--
-- KEYS[1] the runs starting (zset)
-- ARGV[1] run id
-- Returns: the time of the mark, ms
local now = now_ms()
redis.call('ZADD', KEYS[1], now, ARGV[1])
return now
