-- push_event.lua: pushes an external event (PushEvent). Every job parked for its key (event_wait.lua) goes
-- back to waiting, at the back of its level, with the event appended to its 'par'
-- (includes/external_events.lua) so its next run sees it; the event triggers matching the key add their
-- jobs; and the servers serving those queues are woken at once. All in this one step, whose jobs may be in
-- any queues: the script reaches beyond one hash slot, so on a Redis Cluster a push goes through
-- record_event.lua and deliver_event.lua instead (services/event_pushes.py). Members of the key's waiters
-- set no longer parked for it are dropped. With an event id, a push repeating one seen within its window
-- changes nothing and answers as the first did. The caller planned the triggers' jobs on the triggers as it
-- read them: when they changed since (their version moved), nothing is written and it plans again.
-- @include common
-- @include add
-- @include stats
-- @include external_events
-- @include event_push
--
-- KEYS[1] the key's waiters set (set)  KEYS[2] the triggers' version (string); then per queue a trigger adds
--   to, 3 keys: its meta, waiting, delayed; last, with an event id, the id's record (string: the first
--   push's answer as JSON, {pushed ms, {queue, job id, ...} woken, {queue, job id, ...} added})
-- ARGV[1] events channel  ARGV[2] the event's key  ARGV[3] the encoded ExternalEvent (key, data, event id)
--   ARGV[4] how long the id's record is kept, ms  ARGV[5] the triggers' version the caller planned on
--   ARGV[6] number of queues Q a trigger adds to; then per queue: its job prefix, its name, its number of
--   jobs N, then N groups of 4: header, data, metadata, extra fields (see includes/add.lua)
-- Returns: {0, pushed ms, jobs woken W, then W pairs queue, job id, then the added jobs' pairs}; the same
--   with 1 first for a repeated event id (the first push's answer); {-1} when the triggers changed since
--   the caller read them (nothing written)
local waiters, version = KEYS[1], KEYS[2]
local channel, key, event, keep = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local nq = tonumber(ARGV[6])
local seen = KEYS[3 + 3 * nq]

local function answer(dup, pushed, woken, added)
  local out = {dup, string.format('%d', pushed), #woken / 2}
  for _, v in ipairs(woken) do out[#out + 1] = v end
  for _, v in ipairs(added) do out[#out + 1] = v end
  return out
end

if seen then
  local first = redis.call('GET', seen)
  if first then
    local a = cjson.decode(first)
    return answer(1, a[1], a[2], a[3])
  end
end
if (redis.call('GET', version) or '0') ~= ARGV[5] then return {-1} end
local now = now_ms()
local tail = pb_bytes(PB_JOB_EVENT, event .. pb_bytes(PB_EVENT_PUSHED_AT, pb_timestamp(now)))

-- The wake: the members by queue (by job prefix), each queue's in one pass that ends with its wake-up.
local queues, order = {}, {}
for _, jkey in ipairs(redis.call('SMEMBERS', waiters)) do
  local prefix, id = string.match(jkey, '^(.-}:job:)(.*)$')
  if prefix then
    if not queues[prefix] then
      queues[prefix] = {}
      order[#order + 1] = prefix
    end
    table.insert(queues[prefix], id)
  else
    redis.call('SREM', waiters, jkey)
  end
end
local woken, added = {}, {}
for _, prefix in ipairs(order) do
  wake_waiters(prefix, queues[prefix], waiters, key, tail, channel, now, woken)
end

-- The triggers' jobs.
local b = 7
for q = 0, nq - 1 do
  local n = tonumber(ARGV[b + 2])
  add_trigger_jobs(KEYS[3 + 3 * q], KEYS[4 + 3 * q], KEYS[5 + 3 * q], ARGV[b], ARGV[b + 1], b + 3, n, channel,
    now, added)
  b = b + 3 + 4 * n
end
if seen then redis.call('SET', seen, cjson.encode({now, woken, added}), 'PX', keep) end
return answer(0, now, woken, added)
