-- complete.lua: records successful runs of leased jobs (a batch), fenced by their lease tokens.
-- @include common
-- @include stats
--
-- KEYS[1] meta (hash)  KEYS[2] active (zset)  KEYS[3] completed (zset)
-- ARGV[1] job key prefix  ARGV[2] number of jobs N; then N groups of 5 fields:
--   id, lease token, result, result content type, run duration in µs as the worker reported it (-1: none;
--   -2: measured here from the run's start, for a pull worker that reported none: stats.lua run_us)
-- Returns: {now, flow hand-offs queued, then one code per job}: 0 ok, -2 job not found, -3 lease not held
--   (stale token). Completions and their durations count in the queue's activity (stats.lua). A watched
--   queue's completions publish their job events in one message (common.lua watched): the queue's settings
--   are read for the first completed job (slot_freed and the keep policies read them anyway).
local meta, active, completed = KEYS[1], KEYS[2], KEYS[3]
local prefix, n = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local out = {now, 0}
local policy, kept = '', false
local done, gone = {}, {}
-- Each distinct keep policy of the batch resolved once (the queue's defaults are one read per call:
-- common.lua queue_settings).
local keep = {}

-- Per job one read (lease check and the fields finishing needs) and two writes; the active and completed
-- sets get the whole batch in one command each.
-- The read: a job marked plain for finishing (common.lua PLAIN) has none of the fields finishing needs
-- (on_finished's too), so the lease check reads its mark only (a GROUP_PLAIN mark names the job's group). Any other job is read again whole, and since
-- a batch's jobs are mostly alike, so is the next (its mark says when to go back).
local whole = false
local k = 2
for i = 0, n - 1 do
  local b = 2 + i * 5
  local id, token = ARGV[b + 1], ARGV[b + 2]
  local jkey = prefix .. id
  local code, f
  if not whole then
    code, f = lease_check(jkey, token, 'p')
    local mark = f[3]
    local grp = plain_group(mark)
    whole = code == 0 and mark ~= PLAIN and mark ~= FINISH_PLAIN and not grp
    f[3] = false  -- the mark's place is kc's below: a job marked plain has no keep policy of its own
    f[11] = grp
  end
  if whole then
    code, f = lease_check(jkey, token, 'kc', 'atm', 'to', 'flo', 'ddk', 'ddt', 'wt', 'p', 'grp')
    whole = f[10] ~= PLAIN and f[10] ~= FINISH_PLAIN and not plain_group(f[10])
  end
  k = k + 1
  if code ~= 0 then
    out[k] = code
  else
    watch_settings(meta, now)
    gone[#gone + 1] = id
    run_ended(prefix, id, f[5], f[11])
    STATS.completed = STATS.completed + 1
    local us = ARGV[b + 5]
    if us == MEASURE_RUN then us = run_us(us, redis.call('HGET', jkey, 'wid'), now) end
    count_run(us)
    -- attempts made counts finished runs, this one too; a job completed by its first finished run stores
    -- none (absent on a completed job reads 1: convert.py). A JSON result is stored without its content
    -- type, as a job's JSON data is, and no result (JSON null) not at all: each job-hash entry left out is
    -- one less to write and for every later command on the job to step over.
    -- A retried job's count goes in the same HSET (a second one cost a command per retried job).
    local res, rct = ARGV[b + 3], ARGV[b + 4]
    if f[4] then
      local w = {'st', 'completed', 'fts', now, 'atm', tonumber(f[4]) + 1}
      if rct ~= JSON_TYPE then
        w[7], w[8], w[9], w[10] = 'res', res, 'rct', rct
      elseif res ~= 'null' then
        w[7], w[8] = 'res', res
      end
      redis.call('HSET', jkey, unpack(w))
    elseif rct ~= JSON_TYPE then
      redis.call('HSET', jkey, 'st', 'completed', 'fts', now, 'res', res, 'rct', rct)
    elseif res ~= 'null' then
      redis.call('HSET', jkey, 'st', 'completed', 'fts', now, 'res', res)
    else
      redis.call('HSET', jkey, 'st', 'completed', 'fts', now)
    end
    -- A job read plain has made no attempt before this one (no 'atm').
    if EVENTS then job_event(prefix, id, 5, nil, (tonumber(f[4]) or 0) + 1) end
    out[2] = out[2] + on_finished(prefix, id, jkey, 'completed', now, true, f[6], f[7], f[8], f[9])
    local p = f[3] or ''
    if keep[p] == nil then keep[p] = keep_policy(meta, f[3], 'kc') end
    if keep[p] then
      redis.call('DEL', jkey, job_logs_key(prefix, id))
    else
      done[#done + 1] = id
      policy, kept = p, true
    end
    out[k] = 0
  end
end
zrem_all(active, gone)
zadd_all(completed, now, done)
if kept then
  local _, age, count = keep_policy(meta, policy, 'kc')
  trim(completed, prefix, age, count, now)
end
if #gone > 0 then slot_freed(meta, prefix) end
write_stats(prefix, now)
publish_events(prefix, now)
return out
