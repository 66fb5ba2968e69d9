-- test_clock.lua: Redis TIME moved forward by the test clock (queue_manager_server.testing). Only a server
-- started with Settings.test_clock loads its scripts with this: engine/scripts.py puts it at the top of every
-- script and has each of their TIME calls call test_clock_time() instead, with the offset key (engine/keys.py
-- test_clock) written into the GET below. Every other server's scripts read TIME alone, as before.

-- TIME as Redis answers it ({seconds, microseconds}), plus the offset (ms) the test has advanced the clock by.
local function test_clock_time()
  local t = redis.call('TIME')
  local offset = tonumber(redis.call('GET', TEST_CLOCK_KEY)) or 0
  local usec = tonumber(t[2]) + (offset % 1000) * 1000
  local sec = tonumber(t[1]) + math.floor(offset / 1000) + math.floor(usec / 1000000)
  return {sec, usec % 1000000}
end
