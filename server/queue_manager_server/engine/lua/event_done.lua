-- event_done.lua: on a Redis Cluster, clears a push whose every queue's share was carried out
-- (deliver_event.lua): its record goes, the event id's record gets the push's whole answer, and each queue
-- found with no waiter left for the key leaves the key's index, unless it was indexed again since the push
-- read it or too shortly before (within ARGV[3] ms): a wait then being parked may still join the queue's
-- set, and must stay findable (index_event_wait.lua, event_wait.lua). Running it twice changes nothing.
--
-- KEYS[1] the pushes to carry out (zset)  KEYS[2] the push's record (hash)  KEYS[3] the key's index (zset)
--   KEYS[4] with an event id, the id's record (string)
-- ARGV[1] push id  ARGV[2] the push's answer (JSON {pushed ms, woken, added} as record_event.lua keeps it)
--   ARGV[3] how long before the push a queue must have been indexed to leave the index, ms; then pairs queue,
--   ms indexed (as the record read it) of the queues with no waiter left
-- Returns: 1 cleared, 0 already cleared
local pushes, record, index, seen = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local at = tonumber(redis.call('HGET', record, 'at'))
if not at then return 0 end
for i = 4, #ARGV, 2 do
  local indexed = tonumber(ARGV[i + 1])
  if tonumber(redis.call('ZSCORE', index, ARGV[i])) == indexed and indexed < at - tonumber(ARGV[3]) then
    redis.call('ZREM', index, ARGV[i])
  end
end
if seen then redis.call('SET', seen, ARGV[2], 'XX', 'KEEPTTL') end
redis.call('DEL', record)
redis.call('ZREM', pushes, ARGV[1])
return 1
