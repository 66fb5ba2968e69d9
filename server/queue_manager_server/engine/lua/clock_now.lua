-- clock_now.lua: Redis's clock as the scripts read it, for the Python side of a server on the test clock
-- (engine/store.py TestClockStore): TIME plus the test clock's offset (includes/test_clock.lua).
--
-- No KEYS, no ARGV.
-- Returns: {seconds, microseconds}, as TIME answers.
local t = redis.call('TIME')
return {tonumber(t[1]), tonumber(t[2])}
