-- push_event.lua: pushes an external event (PushEvent). Every job parked for its key (event_wait.lua) goes
-- back to waiting, at the back of its level, with the event appended to its 'par'
-- (includes/external_events.lua) so its next run sees it; the event triggers matching the key add their
-- jobs; and the servers serving those queues are woken at once. All in this one step, whose jobs may be in
-- any queues: the script reaches beyond one hash slot, so on a Redis Cluster a push goes through
-- record_event.lua and deliver_event.lua instead (services/event_pushes.py). Members of the key's waiters
-- set no longer parked for it are dropped. With an event id, a push repeating one seen within its window
-- changes nothing and answers as the first did. The caller planned the triggers' jobs on the triggers as it
-- read them: when they changed since (their version moved), nothing is written and it plans again.
-- A key with more than ARGV[8] waiters is not woken here: this step adds the triggers' jobs, moves the
-- waiters set to the push's snapshot and writes the push's record, and wake_event_batch.lua wakes the
-- snapshot a batch per call (includes/event_push.lua; services/long_pushes.py), the janitor going on with a
-- push whose server was lost.
-- @include common
-- @include add
-- @include stats
-- @include external_events
-- @include event_push
--
-- KEYS[1] the key's waiters set (set)  KEYS[2] the triggers' version (string)  KEYS[3] the push's snapshot
--   of the waiters (set)  KEYS[4] the pushes to carry out (zset: push id -> ms of its last step)  KEYS[5] the
--   push's record (hash: key, ev, at, eid, cut, n, w, a: wake_event_batch.lua); then per queue a trigger adds
--   to, 3 keys: its meta, waiting, delayed; last, with an event id, the id's record (string: the first
--   push's answer as JSON, {pushed ms, {queue, job id, ...} woken, {queue, job id, ...} added, push id ('',
--   or the push's while it is carried out in batches), jobs woken (more than listed above a bound)})
-- ARGV[1] events channel  ARGV[2] the event's key  ARGV[3] the encoded ExternalEvent (key, data, event id)
--   ARGV[4] how long the id's record is kept, ms  ARGV[5] the triggers' version the caller planned on
--   ARGV[6] number of queues Q a trigger adds to  ARGV[7] the push's id  ARGV[8] the most waiters woken in
--   this one step  ARGV[9] the event id ('' for none); then per queue: its job prefix, its name, its number of jobs N, then N groups of 4:
--   header, data, metadata, extra fields (see includes/add.lua)
-- Returns: {0, pushed ms, jobs listed W, jobs woken, then W pairs queue, job id, then the added jobs'
--   pairs}; the same with 1 first for a repeated event id (the first push's answer); {2, push id, 0} when
--   the push goes on in batches, {2, push id, 1} for a repeated event id whose push still does; {-1} when
--   the triggers changed since the caller read them (nothing written)
local waiters, version = KEYS[1], KEYS[2]
local channel, key, event, keep = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local snapshot, pushes, record = KEYS[3], KEYS[4], KEYS[5]
local nq, push_id = tonumber(ARGV[6]), ARGV[7]
local seen = KEYS[6 + 3 * nq]

local function answer(dup, pushed, woken, added, count)
  local out = {dup, string.format('%d', pushed), #woken / 2, count or #woken / 2}
  for _, v in ipairs(woken) do out[#out + 1] = v end
  for _, v in ipairs(added) do out[#out + 1] = v end
  return out
end

if seen then
  local first = redis.call('GET', seen)
  if first then
    local a = cjson.decode(first)
    if a[4] and a[4] ~= '' then return {2, a[4], 1} end
    return answer(1, a[1], a[2], a[3], a[5])
  end
end
if (redis.call('GET', version) or '0') ~= ARGV[5] then return {-1} end
local now = now_ms()
local tail = pb_bytes(PB_JOB_EVENT, event .. pb_bytes(PB_EVENT_PUSHED_AT, pb_timestamp(now)))

-- The wake: here, before the triggers' jobs, or in batches from the push's snapshot after them.
local woken, added = {}, {}
local batched = redis.call('SCARD', waiters) > tonumber(ARGV[8])
if not batched then
  wake_members(redis.call('SMEMBERS', waiters), waiters, key, tail, channel, now, woken, nil)
end
local b = 10
for q = 0, nq - 1 do
  local n = tonumber(ARGV[b + 2])
  add_trigger_jobs(KEYS[6 + 3 * q], KEYS[7 + 3 * q], KEYS[8 + 3 * q], ARGV[b], ARGV[b + 1], b + 3, n, channel,
    now, added)
  b = b + 3 + 4 * n
end
if batched then
  take_snapshot(waiters, snapshot)
  redis.call('HSET', record, 'key', key, 'ev', tail, 'at', now, 'eid', ARGV[9],
    'cut', string.format('%d', now_us()), 'n', 0, 'w', '[]', 'a', cjson.encode(added))
  redis.call('ZADD', pushes, now, push_id)
  if seen then redis.call('SET', seen, cjson.encode({now, {}, added, push_id, 0}), 'PX', keep) end
  return {2, push_id, 0}
end
if seen then redis.call('SET', seen, cjson.encode({now, woken, added, '', #woken / 2}), 'PX', keep) end
return answer(0, now, woken, added)
