-- advance_clock.lua: moves the test clock forward (queue_manager_server.testing), keeping the deadlines that
-- stand for real time where they were in real time: leases (the active sets' scores), worker registry
-- entries and job-event watches. Workers and servers renew those by their own monotonic clocks, so a jump of
-- an hour must not make every lease expired and every worker gone. Delays, backoffs, schedules, timeouts,
-- expiries, priority bounds, rate-limit buckets and retention follow the clock.
--
-- KEYS[1] the test clock's offset (string, ms)  KEYS[2] the worker registry index (zset)
-- then per registered queue: meta (hash), active (zset)
-- ARGV[1] ms to add (> 0)
-- Returns: the new offset (ms)
local ms = tonumber(ARGV[1])
local function shift_scores(key)
  local entries = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  for i = 1, #entries, 2 do
    redis.call('ZADD', key, tonumber(entries[i + 1]) + ms, entries[i])
  end
end
shift_scores(KEYS[2])
for i = 3, #KEYS, 2 do
  local evw = tonumber(redis.call('HGET', KEYS[i], 'evw'))
  if evw then redis.call('HSET', KEYS[i], 'evw', evw + ms) end
  shift_scores(KEYS[i + 1])
end
return redis.call('INCRBY', KEYS[1], ms)
