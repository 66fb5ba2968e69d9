-- push_event.lua: pushes an external event (PushEvent): every job parked for its key (event_wait.lua) goes
-- back to waiting, at the back of its level, with the event appended to its 'par' (includes/external_events.lua)
-- so its next run sees it, and the servers serving its queue are woken at once. The woken jobs may be in any
-- queues: this script reaches beyond one hash slot, which is why external events are refused on a Redis
-- Cluster (services/external_events.py). Members of the key's waiters set that are no longer parked for it
-- are dropped. With an event id, a push repeating one seen within its window changes nothing and answers as
-- the first did.
-- @include common
-- @include external_events
--
-- KEYS[1] the key's waiters set (set)  KEYS[2] (with an event id) the id's record (string: the first push's
--   answer as JSON, [pushed ms, queue, job id, ...])
-- ARGV[1] events channel  ARGV[2] the event's key  ARGV[3] the encoded ExternalEvent (key, data, event id)
--   ARGV[4] how long the id's record is kept, ms
-- Returns: {duplicate (0 or 1), pushed ms, then per woken job: its queue, its id}
local waiters, seen = KEYS[1], KEYS[2]
local channel, key, event, keep = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if seen then
  local first = redis.call('GET', seen)
  if first then
    local out = cjson.decode(first)
    out[1] = string.format('%d', out[1])
    table.insert(out, 1, 1)
    return out
  end
end
local now = now_ms()
local tail = pb_bytes(PB_JOB_EVENT, event .. pb_bytes(PB_EVENT_PUSHED_AT, pb_timestamp(now)))
-- The members by queue (by job prefix), each queue's in one pass that ends with its wake-up.
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
local answer = {now}
for _, prefix in ipairs(order) do
  local meta, delayed, waiting = queue_key(prefix, 'meta'), queue_key(prefix, 'delayed'), queue_key(prefix, 'waiting')
  local queue = string.match(prefix, '^.*:{(.*)}:job:$')
  watch_settings(meta, now)
  READY.waiting, GROUP_QUEUED = 0, 0
  for _, id in ipairs(queues[prefix]) do
    local jkey = prefix .. id
    local f = redis.call('HMGET', jkey, 'st', 'ewk', 'ewp', 'par', 'evl')
    if f[1] == 'delayed' and f[2] and waits_for(f[2], key)
        and tonumber(redis.call('ZSCORE', delayed, id)) == tonumber(f[3]) then
      event_wait_drop(prefix, id, f[2])
      redis.call('HDEL', jkey, 'ewk', 'ewp', 'run')
      redis.call('HSET', jkey, 'par', (f[4] or '') .. tail, 'evl', (tonumber(f[5]) or 0) + #tail, 'p', NOT_PLAIN,
        'rdy', now)
      redis.call('ZREM', delayed, id)
      to_waiting(waiting, jkey, id, true, nil)
      READY.waiting = READY.waiting + 1
      answer[#answer + 1] = queue
      answer[#answer + 1] = id
    else
      redis.call('SREM', waiters, jkey)
    end
  end
  publish_ready(meta, channel, queue, READY.waiting, -1)
  publish_events(prefix, now)
  EVENTS = false
end
if seen then redis.call('SET', seen, cjson.encode(answer), 'PX', keep) end
answer[1] = string.format('%d', now)
table.insert(answer, 1, 0)
return answer
