-- time_out.lua: fails runs past their deadline (the job's timeout, counted from the start of the run) as
-- timed out. The run counts as an attempt and the job is retried per its attempts and backoff exactly like
-- a worker's failure (common.lua fail_attempt), and the server holding the lease is told to stop the run
-- ('t <queue> <id> <token> <reason>' on the events channel: a cancel's 'c' that says the timeout ended it,
-- so the worker ends the run as at its own timeout). The worker's late report finds its lease gone.
-- @include common
-- @include stats
--
-- KEYS[1] meta (hash)  KEYS[2] active (zset)  KEYS[3] waiting (lists)  KEYS[4] delayed (zset)
-- KEYS[5] failed (zset)  KEYS[6] dead-letter outbox (list)  KEYS[7] deadlines (zset)
-- ARGV[1] job key prefix  ARGV[2] max runs per call  ARGV[3] events channel  ARGV[4] queue name
-- Returns: {now, next deadline (-1 = none), then per timed-out run: id, code, run-at}, with fail_attempt's
--   codes: 0 retry now, 1 retry delayed (run-at), 2 failed for good, 3 cancelled (a cancel was pending).
--   Failures for good count in the queue's activity (stats.lua). Retries publish their wake-up events.
local meta, active, waiting, delayed, failed, outbox, deadlines =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local prefix, limit, channel, queue = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local now = now_ms()
local out = {now, -1}
local pushes, ended = {}, {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', deadlines, '-inf', now, 'LIMIT', 0, limit)) do
  local jkey = prefix .. id
  local f = redis.call('HMGET', jkey, 'st', 'tok', unpack(ATTEMPT_FIELDS))
  if f[1] ~= 'active' then
    redis.call('ZREM', deadlines, id)  -- the run ended meanwhile (the job was deleted with its queue)
  else
    -- Its deadline goes with the run (fail_attempt's run_ended); the active set once, after the pushes.
    watch_settings(meta, now)
    ended[#ended + 1] = id
    local reason = 'job timed out after ' .. string.format('%g', (tonumber(f[10]) or 0) / 1000) .. 's'
    redis.call('PUBLISH', channel, 't ' .. queue .. ' ' .. id .. ' ' .. (f[2] or '') .. ' ' .. reason)
    local code, run = fail_attempt(meta, waiting, delayed, failed, outbox, prefix, id, now, reason, '', false,
      f, pushes, ERR_TIMEOUT)
    table.insert(out, id); table.insert(out, code); table.insert(out, run)
  end
end
push_waiting(pushes)
-- Out of the active set once the retries are pushed (a call stopped midway leaves its runs leased).
zrem_all(active, ended)
if #out > 2 then slot_freed(meta, prefix) end
publish_ready(meta, channel, queue, READY.waiting, READY.earliest)
write_stats(prefix, now)
publish_events(prefix, now)
local nx = redis.call('ZRANGE', deadlines, 0, 0, 'WITHSCORES')
if #nx > 0 then out[2] = tonumber(nx[2]) end
return out
