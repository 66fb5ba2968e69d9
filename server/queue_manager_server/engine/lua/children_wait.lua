-- children_wait.lua: ends the run of a job that added children (children_add.lua, then their adds) without
-- using an attempt, as retry_later.lua ends a durable sleep, and parks the job in delayed with no due time
-- (includes/children.lua CHILDREN_PARKED) until children_done.lua records its last child's end. A job whose
-- children have all finished already goes back to waiting at once; one whose cancel was asked ends
-- cancelled. New data (a checkpoint) is written in the same step. The wait number goes up, so the next
-- run's children get ids of their own.
-- @include common
-- @include data
-- @include children
--
-- KEYS[1] meta (hash)  KEYS[2] active (zset)  KEYS[3] delayed (zset)  KEYS[4] waiting (levels' base key)
-- ARGV[1] job key prefix  ARGV[2] events channel  ARGV[3] queue name  ARGV[4] job id  ARGV[5] lease token
--   ARGV[6] content type of the new data ('' to keep the data)  ARGV[7] the new data
-- Returns: {code, children not finished}: 1 parked, 2 waiting again (none left to wait for), 3 cancelled,
--   -2 not found, -3 lease not held
local meta, active, delayed, waiting = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, channel, queue, id, token, ct, data = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local jkey = prefix .. id
local code, f = lease_check(jkey, token, 'cxr', 'to', 'wt', 'grp', 'ct', 'kpn', 'kgn')
if code ~= 0 then return {code, 0} end
local now = now_ms()
watch_settings(meta, now)
redis.call('ZREM', active, id)
run_ended(prefix, id, f[4], f[6])
local pending = tonumber(f[8]) or 0
local out
if f[3] == '1' then
  finish_cancelled(meta, prefix, id, now)
  out = {3, pending}
else
  if ct ~= '' then set_data(jkey, data, ct, f[7]) end
  redis.call('HSET', jkey, 'kgn', (tonumber(f[9]) or 0) + 1)
  if pending > 0 then
    redis.call('HSET', jkey, 'st', 'delayed')
    redis.call('HDEL', jkey, 'run')
    redis.call('ZADD', delayed, CHILDREN_PARKED, id)
    notify_job(prefix, id, jkey, 'delayed', f[5])
    if EVENTS then job_event(prefix, id, 8) end
    out = {1, pending}
  else
    children_wake(waiting, delayed, jkey, id, now)
    out = {2, 0}
  end
end
slot_freed(meta, prefix)
publish_ready(meta, channel, queue, READY.waiting, -1)
publish_events(prefix, now)
return out
