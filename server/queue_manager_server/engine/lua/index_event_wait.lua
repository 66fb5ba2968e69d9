-- index_event_wait.lua: on a Redis Cluster, lists a queue in the index of each key one of its jobs is about
-- to wait for (WaitForEvent), before event_wait.lua parks the job in the queue's own hash slot: a push reads the
-- index to find the queues with waiters for its key (record_event.lua), so a wait parked before a push's
-- record is always found. The entry's score is the time it was written, which event_wait.lua checks and
-- event_done.lua compares before it drops the entry (services/event_pushes.py explains the race). An index
-- lives as long as its waits may: kept for a wait with no timeout, else an hour past the latest timeout,
-- as event_wait.lua keeps the waiters sets.
-- @include common
-- @include external_events
--
-- KEYS[1..] the keys' indexes (zset: queue -> ms it was indexed)
-- ARGV[1] queue name  ARGV[2] the wait's timeout, ms (-1: none)
-- Returns: the time the queue was indexed (ms)
local queue, timeout = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
for _, index in ipairs(KEYS) do
  local ttl = redis.call('PTTL', index)
  redis.call('ZADD', index, now, queue)
  if timeout < 0 then
    redis.call('PERSIST', index)
  elseif ttl ~= -1 and ttl < timeout + EVENT_WAITERS_SLACK then
    redis.call('PEXPIRE', index, timeout + EVENT_WAITERS_SLACK)
  end
end
return string.format('%d', now)
