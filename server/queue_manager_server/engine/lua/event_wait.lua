-- event_wait.lua: ends the run of a job that waits for an external event (WaitForEvent) without using an
-- attempt, as children_wait.lua does, and parks it in delayed (includes/external_events.lua) until a push of
-- one of its keys (push_event.lua) or its timeout. It joins each key's waiters set in the same step, so a
-- push runs either before the wait (and is not seen) or after it (and wakes it): none is lost between them.
-- A job whose cancel was asked ends cancelled. New data (a checkpoint) is written in the same step.
-- @include common
-- @include data
-- @include external_events
--
--
-- On a Redis Cluster the waiters sets are the queue's own (engine/keys.py queue_event_waiters), marked by
-- 'ewq' on the job, and the server first listed the queue in each key's index (index_event_wait.lua, in
-- another hash slot) at ARGV[10]: a wait joins its sets only within ARGV[11] ms of that, so a push that found
-- the queue with no waiter left, and dropped it from the index, can only have missed a wait it could not
-- have seen anyway (services/event_pushes.py); an older one is refused (-5) and the server indexes again.
--
-- KEYS[1] meta (hash)  KEYS[2] active (zset)  KEYS[3] delayed (zset); KEYS[4..] the waiters sets (set) of
--   the keys, in the order of ARGV[12..]
-- ARGV[1] job key prefix  ARGV[2] events channel  ARGV[3] queue name  ARGV[4] job id  ARGV[5] lease token
--   ARGV[6] content type of the new data ('' to keep the data)  ARGV[7] the new data  ARGV[8] timeout ms
--   (-1: none)  ARGV[9] the encoded EventWait holding the keys  ARGV[10] when the queue was indexed for the
--   keys, ms (-1: one Redis server, no index)  ARGV[11] how old that may be, ms; ARGV[12..] the keys
-- Returns: {code, deadline ms (-1: none)}: 1 parked, 3 cancelled, -2 not found, -3 lease not held, -5 the
--   index is too old (nothing written)
local meta, active, delayed = KEYS[1], KEYS[2], KEYS[3]
local prefix, channel, queue, id, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local ct, data, timeout, wait = ARGV[6], ARGV[7], tonumber(ARGV[8]), ARGV[9]
local jkey = prefix .. id
local code, f = lease_check(jkey, token, 'cxr', 'to', 'wt', 'grp', 'ct', 'ewk', 'par', 'evl')
if code ~= 0 then return {code, -1} end
local now = now_ms()
local indexed = tonumber(ARGV[10])
if indexed >= 0 and now - indexed > tonumber(ARGV[11]) then return {-5, -1} end
watch_settings(meta, now)
redis.call('ZREM', active, id)
run_ended(prefix, id, f[4], f[6])
local out, earliest = {3, -1}, -1
if f[3] == '1' then
  finish_cancelled(meta, prefix, id, now)
else
  if ct ~= '' then set_data(jkey, data, ct, f[7]) end
  if f[8] then event_wait_drop(prefix, id, f[8]) end
  local score = EVENT_PARKED
  if timeout >= 0 then
    score = now + timeout
    earliest = score
    wait = wait .. pb_bytes(PB_WAIT_UNTIL, pb_timestamp(score))
  end
  local tail = pb_bytes(PB_JOB_EVENT_WAIT, wait)
  redis.call('HSET', jkey, 'st', 'delayed', 'ewk', table.concat(ARGV, '\n', 12), 'ewp', score,
    'ewt', string.format('%d', now_us()),
    'par', par_base(f[9], f[10]) .. tail, 'evl', #tail, 'p', NOT_PLAIN)
  if indexed >= 0 then redis.call('HSET', jkey, 'ewq', 1) end
  if timeout >= 0 then redis.call('HSET', jkey, 'run', score) else redis.call('HDEL', jkey, 'run') end
  redis.call('ZADD', delayed, score, id)
  for i = 4, #KEYS do
    local ttl = redis.call('PTTL', KEYS[i])
    redis.call('SADD', KEYS[i], jkey)
    if timeout < 0 then
      redis.call('PERSIST', KEYS[i])
    elseif ttl ~= -1 and ttl < timeout + EVENT_WAITERS_SLACK then
      redis.call('PEXPIRE', KEYS[i], timeout + EVENT_WAITERS_SLACK)
    end
  end
  notify_job(prefix, id, jkey, 'delayed', f[5])
  if EVENTS then job_event(prefix, id, 8, nil, nil, nil, earliest >= 0 and earliest or nil) end
  out = {1, earliest}
end
slot_freed(meta, prefix)
publish_ready(meta, channel, queue, 0, earliest)
publish_events(prefix, now)
return out
