-- fail.lua: records failed runs of leased jobs (a batch): retry after backoff, or fail for good
-- and queue the dead-letter hand-off. Fenced by lease tokens.
-- @include common
-- @include stats
--
-- KEYS[1] meta (hash)  KEYS[2] active (zset)  KEYS[3] waiting (lists)  KEYS[4] delayed (zset)
-- KEYS[5] failed (zset)  KEYS[6] dead-letter outbox (list)
-- ARGV[1] job key prefix  ARGV[2] events channel  ARGV[3] queue name (for the events)
-- ARGV[4] number of jobs N; then N groups of 7 fields:
--   id, lease token, error message, stack trace, do-not-retry (1/0), run duration in µs (-1: none; -2:
--   measured here from the run's start, for a pull worker that reported none: stats.lua run_us),
--   kind (1: the run raised an error; 2: it ran out of the job's timeout on its worker)
-- Returns: {now, then per job: code, run-at}: code 0 retry now (waiting), 1 retry delayed (run-at set),
--   2 failed for good, 3 cancelled (a cancel was asked while it ran; no retry follows), -2 job not found,
--   -3 lease not held (stale token)
-- The retry logic is common.lua's fail_attempt, shared with time_out.lua; the run goes into the job's error
-- history as its kind (ERR_RAISED or ERR_TIMEOUT). Failures for good, the runs' durations and the failed
-- runs by kind count in the queue's activity (stats.lua). Jobs back to waiting or delayed publish the wake-up
-- events an add would (no second round trip for them).
local meta, active, waiting, delayed, failed, outbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local prefix, channel, queue, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local now = now_ms()
local out = {now}
local freed = false
local gone = {}
local pushes = {}

for i = 0, n - 1 do
  local b = 4 + i * 7
  local id, token, msg, stack, no_retry = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
  local jkey = prefix .. id
  local code, f = lease_check(jkey, token, unpack(ATTEMPT_FIELDS))
  if code ~= 0 then
    table.insert(out, code); table.insert(out, -1)
  else
    watch_settings(meta, now)
    gone[#gone + 1] = id
    freed = true
    count_run(run_us(ARGV[b + 6], f[#ATTEMPT_FIELDS + 2], now))  -- 'wid', the last of ATTEMPT_FIELDS
    local result, run = fail_attempt(meta, waiting, delayed, failed, outbox, prefix, id, now, msg, stack,
      no_retry == '1', f, pushes, ARGV[b + 7] == '2' and ERR_TIMEOUT or ERR_RAISED)
    table.insert(out, result); table.insert(out, run)
  end
end
push_waiting(pushes)
zrem_all(active, gone)
if freed then slot_freed(meta, prefix) end
publish_ready(meta, channel, queue, READY.waiting, READY.earliest)
write_stats(prefix, now)
publish_events(prefix, now)
return out
