-- add_jobs.lua: adds a batch of jobs to one queue (waiting or delayed), idempotent on job id.
-- @include common
-- @include add
-- @include stats
-- @include claim
--
-- KEYS[1] meta      (hash)   KEYS[2] waiting (lists)   KEYS[3] delayed (zset)
-- KEYS[4] active    (zset)   KEYS[5] limiter (hash): only with a folded claim
-- ARGV[1] job key prefix  ARGV[2] events channel  ARGV[3] queue name (for the events)
-- ARGV[4] number of jobs N  ARGV[5] answer: 1 returns each added job's fields, 0 not (bulk writes)
-- ARGV[6..10] a claim folded into the add, run once the jobs are in (0 jobs: none): max jobs, lease token,
--   worker id, lease ms, max delayed jobs to promote first (as claim.lua's ARGV[2..6]); when it leaves no
--   ready job, the add publishes no 'w' wake-up
-- ARGV[11] 1: each job is checked against the queue's size limits (includes/add.lua size_limits: a producer's
--   add); 2: the call's jobs are checked whole first, and none is added unless all fit (a bulk add of one
--   call); 0: not (jobs the server adds itself, a staged bulk add checked whole before: size_room.lua)
-- then N groups of 4: header, data, metadata, extra fields (see includes/add.lua; few arguments keep the
--   call cheap to encode), then the folded claim's worker labels (name, value pairs; none for a worker
--   without: as claim.lua's ARGV[7..]).
-- Returns: {now, waiting added, earliest run-at of delayed jobs added (-1 = none), paused (1/0), published
--   'w' (1/0: a worker waited for the queue's jobs, common.lua publish_ready), the folded claim's reply
--   (as claim.lua's; 0 without one), then per
--   job: id, created (1), existing (0: its id), deduplicated (2: its dedup key held; an EXTEND restarted the
--   key's ttl), replaced (3: the waiting or delayed job holding its dedup key has its data now, Dedup.mode
--   REPLACE) or refused for want of room (-1 the queue is full, -2 its group is),
--   and with answer its fields but the data as name/value pairs
--   (empty for an existing job; 1 for a job that holds its name, time and data only: 'ts' is now; the
--   plain mark, common.lua PLAIN, is never answered)}; an
--   existing job's id is the holder's when its dedup key was held, or {-1} when the queue is not
--   registered, or {-2, 1, '', held, max_size, jobs of the add} (the queue) / {-2, 2, group, held, max_size,
--   jobs of the add in it} (that group) when a whole check found no room (the figures for its message). The
--   jobs created count in the queue's activity (stats.lua), and in a watched queue publish their job events
--   with the folded claim's, in one message (common.lua watched). An add answers from this reply:
--   no read-back of what was just written.
local meta, waiting, delayed = KEYS[1], KEYS[2], KEYS[3]
local prefix, channel, queue, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local answer = ARGV[5] == '1'

local d = add_defaults(meta)
if not d[12] then return {-1} end  -- every registered queue has its 'created' time
local now = now_ms()
watched(d[21], now)
local out = {now, 0, -1, d[11] == '1' and 1 or 0, 0, 0}
local added_waiting, earliest = 0, -1
local pushes = {}
-- Each insert_job code (includes/add.lua) as this reply answers it.
local ANSWER_CODES = {[0] = 0, [1] = 1, [2] = 1, [3] = 2, [4] = 3, [5] = 3, [-1] = -1, [-2] = -2}
-- With a folded claim: the jobs inserted waiting, which it may take without reading them back (claim.lua).
local want = tonumber(ARGV[6])
local fresh = want > 0 and {} or nil

-- A plain job (a short header: id and name; no metadata or extra fields) in a queue whose default options
-- are the defaults is stored here as insert_job's plain path (includes/add.lua) stores it, without splitting
-- its header into a table, the call, or a table of its fields (unless a folded claim takes it): Valkey's
-- script time per add in calls of 25 such jobs 5.0–5.4 → 3.3–3.8 µs, and the producers' single adds +11%
-- (their writes are what a burst of adds waits for: bench/RESULTS.md). Written out here, not called: the
-- two calls of a shared helper cost single adds ~4% (twelve interleaved pairs); tests/test_engine.py checks
-- that this path, insert_job's plain path (staged bulk writes) and its general one store the same job.
-- A queue with size limits checks each job (size_limits) on insert_job's path, or the call's jobs whole.
local lim = ARGV[11] ~= '0' and size_limits(d) or nil
if lim and ARGV[11] == '2' then
  local counts = {}
  for i = 0, n - 1 do
    local grp = split_header(ARGV[12 + i * 4])[20]
    if grp and grp ~= '' then counts[grp] = (counts[grp] or 0) + 1 end
  end
  local full, grp, held, cap, adding = lim.fits(waiting, delayed, n, counts)
  if full then return {-2, full == 'q' and 1 or 2, grp, held, cap, adding} end
  lim = nil
end
local plain_level = not lim and plain_defaults(d) and level_key(waiting, DEFAULT_PRI)
local k, added = #out, 0
for i = 0, n - 1 do
  local b = 11 + i * 4
  local hs, data = ARGV[b + 1], ARGV[b + 2]
  local z = plain_level and ARGV[b + 3] == '' and ARGV[b + 4] == '' and string.find(hs, '\0', 1, true)
  if z and string.find(hs, '\0', z + 1, true) == #hs then
    local id = string.sub(hs, 1, z - 1)
    local jkey = prefix .. id
    if redis.call('EXISTS', jkey) == 1 then
      out[k + 1], out[k + 2] = id, 0
      k = k + 2
      if answer then k = k + 1; out[k] = {} end
    else
      local name = string.sub(hs, z + 1, -2)
      redis.call('HSET', jkey, 'name', name, 'ts', now, 'data', data, 'p', PLAIN)
      push_later(pushes, plain_level, id)
      added_waiting, added = added_waiting + 1, added + 1
      if fresh then fresh[id] = {{'name', name, 'ts', now}, data} end
      if EVENTS then job_event(prefix, id, 1, name) end
      -- Stored with its name and time only (and the data and the plain mark): answered 1, the caller knows
      -- both.
      out[k + 1], out[k + 2] = id, 1
      k = k + 2
      if answer then k = k + 1; out[k] = 1 end
    end
  else
    local h = split_header(hs)
    local code, run, got, fields = insert_job(meta, waiting, delayed, prefix, d, now, h, data,
      ARGV[b + 3], ARGV[b + 4], pushes, lim)
    inserted_event(prefix, code, got, h[2], run)
    if code == 1 or code == 5 then
      added_waiting = added_waiting + 1
      if code == 1 and fresh then fresh[got] = {fields, data} end
    elseif run >= 0 and (earliest < 0 or run < earliest) then
      earliest = run
    end
    -- A job this call inserted and a later add replaced: a folded claim reads it, not what was inserted.
    if code >= 4 and fresh then fresh[got] = nil end
    if code == 1 or code == 2 then added = added + 1 end
    out[k + 1], out[k + 2] = got, ANSWER_CODES[code]
    k = k + 2
    -- A job stored with its name and time only (and the data) is answered 1: the caller knows both.
    if answer then k = k + 1; out[k] = (fields and #fields == 4) and 1 or fields or {} end
  end
end
STATS.added = STATS.added + added
push_waiting(pushes)
out[2], out[3] = added_waiting, earliest
local ready = added_waiting
if want > 0 then
  local emptied, labels
  local from = 12 + n * 4
  if #ARGV >= from then
    labels = {}
    for i = from, #ARGV - 1, 2 do labels[ARGV[i]] = ARGV[i + 1] end
  end
  out[6], emptied = claim_jobs(meta, waiting, delayed, KEYS[4], KEYS[5], prefix, want, ARGV[7], ARGV[8],
    tonumber(ARGV[9]), tonumber(ARGV[10]), now, {d[11], d[13], d[14], d[15], d[12], d[17], d[21], d[22]}, fresh,
    labels)
  -- The folded claim left no ready job: no waiter anywhere would find one, so none is woken and the
  -- queue's hungry mark stays (its waiters still wait). Unless it passed over routed jobs its worker cannot
  -- take (out[6][7]): a worker that matches them may wait, here or on another server.
  if emptied and out[6][7] == 0 then ready = 0 end
end
out[5] = publish_ready(meta, channel, queue, ready, earliest)
write_stats(prefix, now)
publish_events(prefix, now)
return out
