-- wake_event_batch.lua: on one Redis server, wakes the next batch of the jobs a push of an external event
-- found waiting when there were too many for one step (push_event.lua wrote the push's record and moved the
-- key's waiters set to the push's snapshot): at most ARGV[3] members are popped from the snapshot and those
-- still parked for the key since before the push's cut are woken, as push_event.lua wakes them
-- (includes/event_push.lua). The record counts the jobs woken and lists the first ARGV[4]; the call that
-- empties the snapshot writes the push's answer into the event id's record, takes the push off the pushes
-- to carry out and keeps the record (as the answer) ARGV[5] ms more. The push's server calls it until done;
-- the janitor goes on with a push whose server was lost (services/long_pushes.py). Each member is popped
-- once, so two callers at once wake each job once.
-- @include common
-- @include add
-- @include stats
-- @include external_events
-- @include event_push
--
-- KEYS[1] the push's snapshot of the waiters (set)  KEYS[2] the pushes to carry out (zset: push id -> ms of
--   its last step)  KEYS[3] the push's record (hash, push_event.lua)  KEYS[4] with an event id, the id's
--   record (string, push_event.lua)
-- ARGV[1] events channel  ARGV[2] the push's id  ARGV[3] the most jobs woken in this call  ARGV[4] the most
--   jobs the answer lists  ARGV[5] how long a finished record stays readable, ms
-- Returns: {0} more to wake; {1, pushed ms, jobs listed W, jobs woken, then W pairs queue, job id, then the
--   added jobs' pairs} once the push is done (the same again while the record stays); {-1} no such push
local snapshot, pushes, record, seen = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local channel, push_id, batch, limit = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local f = redis.call('HMGET', record, 'key', 'ev', 'at', 'cut', 'n', 'w', 'a', 'done')
if not f[3] then return {-1} end
local listed, added, count = cjson.decode(f[6]), cjson.decode(f[7]), tonumber(f[5])

local function answer()
  local out = {1, f[3], #listed / 2, count}
  for _, v in ipairs(listed) do out[#out + 1] = v end
  for _, v in ipairs(added) do out[#out + 1] = v end
  return out
end

if f[8] then return answer() end
local now = now_ms()
local woken = {}
wake_members(redis.call('SPOP', snapshot, batch), snapshot, f[1], f[2], channel, now, woken, tonumber(f[4]))
count = count + #woken / 2
for i = 1, #woken, 2 do
  if #listed >= 2 * limit then break end
  listed[#listed + 1] = woken[i]
  listed[#listed + 1] = woken[i + 1]
end
redis.call('HSET', record, 'n', count, 'w', cjson.encode(listed))
if redis.call('EXISTS', snapshot) == 1 then
  redis.call('ZADD', pushes, 'XX', now, push_id)  -- still alive: the janitor leaves it to its server
  return {0}
end
redis.call('HSET', record, 'done', 1)
redis.call('PEXPIRE', record, tonumber(ARGV[5]))
redis.call('ZREM', pushes, push_id)
if seen then
  redis.call('SET', seen, cjson.encode({tonumber(f[3]), listed, added, '', count}), 'XX', 'KEEPTTL')
end
return answer()
