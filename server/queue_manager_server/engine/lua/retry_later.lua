-- retry_later.lua: puts running jobs back to delayed without using an attempt, a batch fenced by lease
-- tokens: runs whose processor was told to slow down (a failure with retry_after: an HTTP 429 from
-- downstream, say), and runs that asked to run again later (a JobDelay: a durable sleep between the steps
-- of a long job, optionally with new data, a checkpoint, written in the same step). Attempts made are
-- unchanged and the start is uncounted, so the next run is no redelivery. For a slow-down the queue starts
-- no job until then on any server: the limiter's 'hold', which claim.lua honours whether or not the queue
-- has a rate limit. A job whose cancel was asked ends cancelled instead. (Allowed past maxmemory with the
-- other outcomes, scripts.py: a checkpoint replaces data, within the payload limit.)
-- @include common
-- @include data
--
-- KEYS[1] meta (hash)  KEYS[2] active (zset)  KEYS[3] delayed (zset)  KEYS[4] limiter (hash)
-- ARGV[1] job key prefix  ARGV[2] events channel  ARGV[3] queue name (for the events)
-- ARGV[4] number of jobs N; then N groups of: id, lease token, wait ms, hold the queue ('1' or '0'),
--   content type of the new data ('' to keep the data), the new data
-- Returns: {now, then per job: code, run-at}: 1 delayed until run-at, 3 cancelled, -2 not found,
--   -3 lease not held. The delays publish their wake-up event.
local meta, active, delayed, limiter = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, channel, queue, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local now = now_ms()
local out = {now}
local hold, freed = 0, false
for i = 0, n - 1 do
  local b = 5 + i * 6
  local id, token, wait, holds = ARGV[b], ARGV[b + 1], tonumber(ARGV[b + 2]), ARGV[b + 3] == '1'
  local ct, data = ARGV[b + 4], ARGV[b + 5]
  local jkey = prefix .. id
  local code, f = lease_check(jkey, token, 'cxr', 'to', 'wt', 'grp', 'ct')
  if code ~= 0 then
    table.insert(out, code); table.insert(out, -1)
  else
    watch_settings(meta, now)
    redis.call('ZREM', active, id)
    run_ended(prefix, id, f[4], f[6])
    freed = true
    if f[3] == '1' then
      finish_cancelled(meta, prefix, id, now)
      table.insert(out, 3); table.insert(out, -1)
    else
      if ct ~= '' then set_data(jkey, data, ct, f[7]) end
      redis.call('HSET', jkey, 'st', 'delayed', 'run', now + wait)
      redis.call('ZADD', delayed, now + wait, id)
      notify_job(prefix, id, jkey, 'delayed', f[5])
      if EVENTS then job_event(prefix, id, 8, nil, nil, nil, now + wait) end
      if holds and now + wait > hold then hold = now + wait end
      ready_at(now + wait)
      table.insert(out, 1); table.insert(out, now + wait)
    end
  end
end
if hold > (tonumber(redis.call('HGET', limiter, 'hold')) or 0) then
  redis.call('HSET', limiter, 'hold', hold)
  -- The hold outlives the expiry claim.lua gives the bucket (twice its window).
  local keep = hold - now + 1000
  if redis.call('PTTL', limiter) < keep then redis.call('PEXPIRE', limiter, keep) end
end
if freed then slot_freed(meta, prefix) end
publish_ready(meta, channel, queue, READY.waiting, READY.earliest)
publish_events(prefix, now)
return out
