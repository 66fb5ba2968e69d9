-- record_event.lua: on a Redis Cluster, records a push of an external event (PushEvent) in the event hash
-- slot, atomically with its event id's deduplication: the queues with waiters for its key (from the key's
-- index, index_event_wait.lua) and the event triggers' jobs are written into the push's record and the push
-- joins the pushes to carry out. Then deliver_event.lua does each queue's share and event_done.lua clears the
-- record; a server lost in between leaves the record for the janitor to carry out (services/event_pushes.py).
-- As push_event.lua, a repeated event id changes nothing, and a plan made on triggers that changed since is
-- refused.
-- @include common
-- @include external_events
--
-- KEYS[1] the triggers' version (string)  KEYS[2] the pushes to carry out (zset: push id -> ms recorded)
--   KEYS[3] the push's record (hash: key, ev, at, eid, q, adds)  KEYS[4] the key's index (zset)
--   KEYS[5] with an event id, the id's record (string: JSON {pushed ms, woken, added[, push id]}, the push id
--   while the push is not carried out yet)
-- ARGV[1] push id  ARGV[2] the event's key  ARGV[3] the encoded ExternalEvent (key, data, event id)
--   ARGV[4] how long the id's record is kept, ms  ARGV[5] the triggers' version the caller planned on
--   ARGV[6] the event id ('' for none)  ARGV[7] the triggers' jobs, as the caller encoded them (kept as is)
-- Returns: {0, pushed ms, the event as a Job (the record's 'ev'), then pairs queue, ms indexed of the key's
--   index}; {1, the id's record} for a repeated event id; {-1} when the triggers changed since the caller
--   read them (nothing written)
local version, pushes, record, index, seen = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, key, event, keep, eid = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[6]
if seen then
  local first = redis.call('GET', seen)
  if first then return {1, first} end
end
if (redis.call('GET', version) or '0') ~= ARGV[5] then return {-1} end
local now = now_ms()
local tail = pb_bytes(PB_JOB_EVENT, event .. pb_bytes(PB_EVENT_PUSHED_AT, pb_timestamp(now)))
local out, queues = {0, string.format('%d', now), tail}, {}
local entries = redis.call('ZRANGE', index, 0, -1, 'WITHSCORES')
for i = 1, #entries, 2 do
  out[#out + 1] = entries[i]
  out[#out + 1] = entries[i + 1]
  queues[#queues + 1] = entries[i] .. '\t' .. entries[i + 1]
end
redis.call('HSET', record, 'key', key, 'ev', tail, 'at', now, 'eid', eid, 'q', table.concat(queues, '\n'),
  'adds', ARGV[7])
redis.call('ZADD', pushes, now, id)
if seen then redis.call('SET', seen, cjson.encode({now, {}, {}, id}), 'PX', keep) end
return out
