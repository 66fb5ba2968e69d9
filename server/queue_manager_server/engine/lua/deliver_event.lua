-- deliver_event.lua: on a Redis Cluster, one queue's share of a push recorded by record_event.lua: wakes the
-- queue's jobs parked for the push's key (its own waiters set of the key) and adds the jobs the event
-- triggers add to it, as push_event.lua does for every queue on one Redis server. It runs at most once per
-- push and queue: the push's mark in the queue, kept as long as the event id's window, holds what it did, and
-- a second run (the janitor carrying out a push whose server was lost after this step) answers that and
-- changes nothing.
-- @include common
-- @include add
-- @include stats
-- @include external_events
-- @include event_push
--
-- KEYS[1] meta (hash)  KEYS[2] waiting  KEYS[3] delayed (zset)  KEYS[4] the queue's waiters set of the key
--   (set)  KEYS[5] the push's mark in the queue (string: JSON {woken ids, added ids})
-- ARGV[1] events channel  ARGV[2] the event's key  ARGV[3] the event as a Job (record_event.lua 'ev')
--   ARGV[4] how long the mark is kept, ms  ARGV[5] job key prefix  ARGV[6] queue name  ARGV[7] number of
--   trigger jobs N, then N groups of 4: header, data, metadata, extra fields (see includes/add.lua)
-- Returns: {waiters left (1: some, 0: none), jobs woken W, W job ids woken, then the ids of the jobs added}
local meta, waiting, delayed, set, mark = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local channel, key, tail, keep, prefix, queue = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]

local function answer(woken, added)
  local out = {redis.call('EXISTS', set), #woken}
  for _, v in ipairs(woken) do out[#out + 1] = v end
  for _, v in ipairs(added) do out[#out + 1] = v end
  return out
end

local done = redis.call('GET', mark)
if done then
  local a = cjson.decode(done)
  return answer(a[1], a[2])
end
local now = now_ms()
local woken, added = {}, {}
local ids = {}
for _, jkey in ipairs(redis.call('SMEMBERS', set)) do
  local id = string.sub(jkey, #prefix + 1)
  if string.sub(jkey, 1, #prefix) == prefix then ids[#ids + 1] = id else redis.call('SREM', set, jkey) end
end
if #ids > 0 then wake_waiters(prefix, ids, set, key, tail, channel, now, woken) end
add_trigger_jobs(meta, waiting, delayed, prefix, queue, 8, tonumber(ARGV[7]), channel, now, added)
-- The pairs queue, id hold this queue's name at every odd place: the mark keeps the ids.
local woken_ids, added_ids = {}, {}
for i = 2, #woken, 2 do woken_ids[#woken_ids + 1] = woken[i] end
for i = 2, #added, 2 do added_ids[#added_ids + 1] = added[i] end
redis.call('SET', mark, cjson.encode({woken_ids, added_ids}), 'PX', keep)
return answer(woken_ids, added_ids)
