-- deliver_event.lua: on a Redis Cluster, one queue's share of a push recorded by record_event.lua: wakes the
-- queue's jobs parked for the push's key (its own waiters set of the key) and adds the jobs the event
-- triggers add to it, as push_event.lua does for every queue on one Redis server. Its first call moves the
-- queue's waiters set to the push's snapshot in the queue and adds the triggers' jobs; each call wakes at
-- most ARGV[7] of the snapshot, so no call holds the node for long (includes/event_push.lua), and the
-- server calls again until the share is done. The push's mark in the queue, kept as long as the event id's
-- window, holds what the share did so far: a call after the share is done (the janitor carrying out a push
-- whose server was lost after this step) answers that and changes nothing, and one after a lost server's
-- last batch goes on from there.
-- @include common
-- @include add
-- @include stats
-- @include external_events
-- @include event_push
--
-- KEYS[1] meta (hash)  KEYS[2] waiting  KEYS[3] delayed (zset)  KEYS[4] the queue's waiters set of the key
--   (set)  KEYS[5] the push's mark in the queue (string: JSON {woken ids (the first ARGV[8]), added ids, cut
--   (µs, as a string), jobs woken, 1 once done}; a mark of two elements is a share done before batches)
--   KEYS[6] the push's snapshot of the queue's waiters (set)
-- ARGV[1] events channel  ARGV[2] the event's key  ARGV[3] the event as a Job (record_event.lua 'ev')
--   ARGV[4] how long the mark is kept, ms  ARGV[5] job key prefix  ARGV[6] queue name  ARGV[7] the most jobs
--   woken in this call  ARGV[8] the most woken ids the mark lists  ARGV[9] number of trigger jobs N, then N
--   groups of 4: header, data, metadata, extra fields (see includes/add.lua)
-- Returns: {waiters left (1: some, 0: none), 1 done (0: call again), jobs woken, ids listed W, W job ids
--   woken, then the ids of the jobs added}; ids only once done
local meta, waiting, delayed, set, mark, snapshot = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local channel, key, tail, keep, prefix, queue = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
local batch, limit = tonumber(ARGV[7]), tonumber(ARGV[8])

local function answer(m)
  if m[5] ~= 1 then return {redis.call('EXISTS', set), 0, m[4], 0} end
  local out = {redis.call('EXISTS', set), 1, m[4], #m[1]}
  for _, v in ipairs(m[1]) do out[#out + 1] = v end
  for _, v in ipairs(m[2]) do out[#out + 1] = v end
  return out
end

local m
local done = redis.call('GET', mark)
if done then
  m = cjson.decode(done)
  if #m == 2 then return answer({m[1], m[2], '0', #m[1], 1}) end
  if m[5] == 1 then return answer(m) end
end
local now = now_ms()
local first = not m
if first then
  take_snapshot(set, snapshot)
  m = {{}, {}, string.format('%d', now_us()), 0, 0}
end
local ids = {}
for _, jkey in ipairs(redis.call('SPOP', snapshot, batch)) do
  if string.sub(jkey, 1, #prefix) == prefix then ids[#ids + 1] = string.sub(jkey, #prefix + 1) end
end
local woken = {}
if #ids > 0 then wake_waiters(prefix, ids, snapshot, key, tail, channel, now, woken, tonumber(m[3])) end
if first then  -- after the first batch's wake, as push_event.lua adds them after its wake
  local added = {}
  add_trigger_jobs(meta, waiting, delayed, prefix, queue, 10, tonumber(ARGV[9]), channel, now, added)
  for i = 2, #added, 2 do m[2][#m[2] + 1] = added[i] end
end
-- The pairs queue, id hold this queue's name at every odd place: the mark keeps the ids.
for i = 2, #woken, 2 do
  if #m[1] < limit then m[1][#m[1] + 1] = woken[i] end
end
m[4] = m[4] + #woken / 2
if redis.call('EXISTS', snapshot) == 0 then m[5] = 1 end
redis.call('SET', mark, cjson.encode(m), 'PX', keep)
return answer(m)
