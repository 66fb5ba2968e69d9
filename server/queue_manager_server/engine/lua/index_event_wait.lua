-- index_event_wait.lua: on a Redis Cluster, lists a queue in the index of each key one of its jobs is about
-- to wait for (WaitForEvent), before event_wait.lua parks the job in the queue's own hash slot: a push reads
-- the index to find the queues with waiters for its key (record_event.lua), so a wait parked before a push's
-- record is always found. The entry's score is the time it was written, which event_wait.lua checks and
-- event_done.lua compares before it drops the entry (services/event_pushes.py explains the race). An index
-- lives as long as its waits may: kept for a wait with no timeout, else an hour past the latest timeout,
-- as event_wait.lua keeps the waiters sets.
-- @include common
-- @include external_events
--
-- The keys with an index are listed too, by when one was last indexed, for the janitor's sweep of queues
-- whose waits ended with no push (event_index_due.lua).
--
-- KEYS[1] the keys with an index (zset: event key -> ms last indexed); KEYS[2..] the keys' indexes (zset:
--   queue -> ms it was indexed), in the order of ARGV[3..]
-- ARGV[1] queue name  ARGV[2] the wait's timeout, ms (-1: none); ARGV[3..] the event keys
-- Returns: the time the queue was indexed (ms)
local queue, timeout = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
for i = 2, #KEYS do
  local index = KEYS[i]
  redis.call('ZADD', KEYS[1], now, ARGV[i + 1])
  local ttl = redis.call('PTTL', index)
  redis.call('ZADD', index, now, queue)
  if timeout < 0 then
    redis.call('PERSIST', index)
  elseif ttl ~= -1 and ttl < timeout + EVENT_WAITERS_SLACK then
    redis.call('PEXPIRE', index, timeout + EVENT_WAITERS_SLACK)
  end
end
return string.format('%d', now)
