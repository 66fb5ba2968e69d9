-- common.lua: helpers shared by the scripts (inlined by engine/scripts.py where a script says
-- `-- @include common`, less the helpers that script never names). Nothing here writes on its own; callers
-- validate before calling. A top-level value here must be a literal (no call) for an unused one to be left out.

-- Waiting jobs: one list per priority level, 1 (runs first) to LEVELS, named '<waiting key>:<level>'
-- (engine/keys.py waiting_levels), FIFO from the head. A list entry costs a job ~19 bytes of memory, an
-- entry in a sorted set ~77. The waiting key itself holds only a sorted set left by an older server, until
-- migrate_waiting.lua has moved it.
local LEVELS = 5
-- What a job hash without 'pri' / 'att' holds: the common values are not stored (engine/records.py), which
-- keeps a small job's hash in a smaller allocation.
local DEFAULT_PRI = 3
local DEFAULT_ATT = 1
-- A job's 'p' field says which of the optional fields a claim and a completion read the job has none of, so
-- those read 5 and 3 fields where they read 13 and 9 (Valkey spends ~0.13 µs per field an HMGET names:
-- ~1.5 µs of the ~11 a drained job cost it). PLAIN: none of ct, atm, stc, md, to, par, wt, kc, flo, ddk,
-- ddt and exp (an expiry, which only a claim reads: includes/claim.lua); a max attempts ('att', the option
-- most jobs with one have) is read anyway, and a priority ('pri') is the level of the list the job is in (a job a priority bound moves to the first level loses the mark
-- there: age_waiting.lua). FINISH_PLAIN: none of those a completion reads (kc, atm, to, flo,
-- ddk, ddt, wt). GROUP_PLAIN followed by the group: a PLAIN job of a fairness group, whose mark tells a
-- claim and a completion its group as well (they read 5 fields and 1 where they read 15 and 11, and no
-- command more: the group's name is stored twice). Absent (a job an older server wrote, or one with such
-- fields) or NOT_PLAIN: read them all (an older server reads a mark it does not know as NOT_PLAIN).
-- Written when the job is inserted (includes/add.lua); every later write of one of those fields (or of
-- 'pri') writes NOT_PLAIN in the same HSET (tests/conftest.py checks every job the tests leave behind).
local PLAIN = '1'
local FINISH_PLAIN = 'c'
local GROUP_PLAIN = 'g'

-- The group a GROUP_PLAIN mark names; nil for any other mark (or none).
local function plain_group(mark)
  if type(mark) == 'string' and string.byte(mark, 1) == 103 then return string.sub(mark, 2) end
end
local NOT_PLAIN = '0'
-- The content type a job hash without 'ct' (the data's) or with 'res' but no 'rct' (the result's) holds.
local JSON_TYPE = 'application/json'
-- Trimming of finished jobs removes at most this many per call, keeping every script O(batch).
local TRIM_CHUNK = 1000
-- What this script call did, for the queue's activity counters: scripts that count include stats.lua,
-- which adds to these as jobs go and writes the sums once at the end (write_stats). raised and timed_out:
-- failed runs (attempts, retried or not) by their kind, counted in fail_attempt.
local STATS = {added = 0, completed = 0, failed = 0, runs = 0, us = 0, hist = {}, raised = 0, timed_out = 0}
-- What this script call made ready again (runs failed or put back), for its one publish_ready at the end:
-- jobs back to waiting, and the earliest run-at of those back to delayed (-1 = none).
local READY = {waiting = 0, earliest = -1}
local function ready_at(run)
  if READY.earliest < 0 or run < READY.earliest then READY.earliest = run end
end

-- A token bucket's capacity (RateLimit.burst): the burst given, else a tenth of the rate's max, at least 1.
-- rl_max: jobs per window; burst: the stored burst (nil, '' or 0: the default).
local function bucket_size(rl_max, burst)
  local b = tonumber(burst) or 0
  if b > 0 then return b end
  return math.max(1, math.ceil(rl_max / 10))
end

-- Redis server time in milliseconds: one clock for all server processes, so their skew never matters.
local function now_ms()
  if redis.replicate_commands then pcall(redis.replicate_commands) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Keys beside a job's hash, derived from the job prefix '<base>job:' like queue_key below (engine/keys.py
-- documents them): the job's log lines, and a deduplication key of its queue.
local function job_logs_key(prefix, id)
  return string.sub(prefix, 1, -5) .. 'logs:' .. id
end
local function dedup_key(prefix, key)
  return string.sub(prefix, 1, -5) .. 'dedup:' .. key
end

-- The protobuf varint at byte i of s and the index after it; nil past the end (a cut message). Read by the
-- scripts that look into an encoded JobMetadata (includes/add.lua, includes/filter.lua).
local function pb_varint(s, i)
  local v, mul = 0, 1
  while true do
    local b = string.byte(s, i)
    if b == nil then return nil end
    v, i = v + (b % 128) * mul, i + 1
    if b < 128 then return v, i end
    mul = mul * 128
  end
end

-- Tells the servers following a job (WaitForJob) its new state: 'j <queue> <id> <state>' on the events
-- channel, both derived from the job prefix '<key prefix>:{<queue>}:job:'. Only jobs flagged 'wt' (a waiter
-- registered, watch_job.lua) publish, so jobs nobody waits for cost nothing. flag: the job's 'wt' field
-- when the caller read it already (in an HMGET it does anyway), nil to read it here. Every script that
-- changes a job's state calls this (to_waiting and on_finished do for their callers).
local function notify_job(prefix, id, jkey, state, flag)
  if flag == nil then flag = redis.call('HGET', jkey, 'wt') end
  if not flag then return end
  local base, queue = string.match(prefix, '^(.*):{(.*)}:job:$')
  redis.call('PUBLISH', base .. ':events', 'j ' .. queue .. ' ' .. id .. ' ' .. state)
end

-- Job events (WatchJobEvents: services/job_events.py, docs/events.md). While a server has watchers of a queue,
-- the queue's meta field 'evw' holds a deadline (ms, Redis clock) that server keeps pushing forward
-- (watch_events.lua), so it lapses by itself once no server renews it. A script reads 'evw' with the settings
-- it reads anyway (queue_settings, includes/add.lua add_defaults, claim.lua's read) and passes it to
-- watched: ahead of now, the call gathers what it does to jobs (job_event) and publishes all of it in one
-- message at its end (publish_events), 'e <queue> <now ms> <JSON array of events>'. A queue nobody watches
-- costs no command. An event is [type, id, name, attempt, text, run-at], less its empty tail: type is the
-- number of its JobEventType (jobs.proto): 1 added, 2 waiting, 3 active, 4 progress, 5 completed, 6 failed,
-- 7 retrying, 8 delayed, 9 stalled, 10 cancelled, 11 removed, 12 expired; text a failure's reason (its first
-- EV_REASON bytes) or a progress (one up to EV_PROGRESS bytes; '' for a longer one); run-at (ms) when a
-- delayed or retried job runs.
local EVENTS = false
local EV_REASON = 200
local EV_PROGRESS = 1000
local function watched(evw, now)
  if not EVENTS and evw and tonumber(evw) > now then EVENTS = {} end
end
-- name: the job's name, nil to read it here (only a watched call gets here: callers test EVENTS first).
local function job_event(prefix, id, kind, name, attempt, text, run)
  if name == nil then name = redis.call('HGET', prefix .. id, 'name') end
  local e = {kind, id, name or ''}
  if attempt or text or run then e[4] = attempt or 0 end
  if text or run then e[5] = text or '' end
  if run then e[6] = run end
  EVENTS[#EVENTS + 1] = e
end
local function publish_events(prefix, now)
  if not EVENTS or #EVENTS == 0 then return end
  local base, queue = string.match(prefix, '^(.*):{(.*)}:job:$')
  redis.call('PUBLISH', base .. ':events',
    'e ' .. queue .. ' ' .. string.format('%d', now) .. ' ' .. cjson.encode(EVENTS))
  EVENTS = {}
end

-- Releases a dedup key held until its job finishes (no ttl), if it still names this job.
local function release_dedup(prefix, id, key)
  local dkey = dedup_key(prefix, key)
  if redis.call('GET', dkey) == id then redis.call('DEL', dkey) end
end

-- Fairness groups (a job's 'grp' field: JobOptions.group). A group's waiting jobs are in lists of their own,
-- one per priority level, '<base>gwait:<level>:<group>' ('<base>' is the queue's key prefix: the waiting key
-- less 'waiting', the job prefix less 'job:'). Each such list that has jobs takes part in a rotation, the
-- sorted set 'gring' of '<level>:<group>' scored level * GROUP_SPAN + turn (a counter, meta 'gturn', which
-- exists once a group ever had a job): a claim takes the lowest first, so the first level's groups go
-- first and the groups of a level take turns (includes/claim.lua pop_groups). A list's entry may outlive
-- its jobs (a removed job, a clean): the claim that finds it empty drops it. A group at its concurrency
-- limit leaves the rotation ('gpark' marks it) until one of its runs ends (run_ended); one out of tokens
-- waits in 'gdelay' (entry -> when its next token is due). Counts: 'gwaiting' group -> its waiting jobs,
-- 'gact' group -> its active jobs, meta 'gw' the waiting jobs of all groups and 'gw1' … 'gw5' those of each
-- level (of the list a job is in: one a priority bound moved counts under the first); 'groups' (scores 0: by name)
-- lists the groups with jobs waiting or active or limits of their own ('glimits' group -> "concurrency
-- rate-max rate-ms max-size"; 'gtok' group -> "tokens ms" of its token bucket). A paused group ('gpaused',
-- counted in meta 'g_paused') takes no turn: a claim drops its entries, and resuming it puts them back
-- (groups_lib().rejoin). engine/keys.py documents the keys.
local GROUP_SPAN = 17592186044416  -- 2^44 turns per level

-- The waiting list of a priority level (a job's 'pri' field; absent: DEFAULT_PRI), of the job's group if it
-- has one (its 'grp' field).
local function level_key(waiting, pri, grp)
  local p = tonumber(pri) or DEFAULT_PRI
  if p < 1 then p = 1 elseif p > LEVELS then p = LEVELS end
  if grp and grp ~= '' then
    return string.sub(waiting, 1, -8) .. 'gwait:' .. string.format('%d', p) .. ':' .. grp
  end
  return waiting .. ':' .. string.format('%d', p)
end

-- Whether this script call put jobs of a group into waiting (a claim after it must look at the rotation even
-- when the queue's settings, read before, showed no group yet).
local GROUPED = false
-- Jobs of groups this script call put behind others of their group's list: none of them is ready for a
-- claim that found nothing to take (after such a claim every group list with jobs is held back by its
-- limits), so they wake no worker (publish_ready); a list's first job joins the rotation and does.
local GROUP_QUEUED = 0

-- The groups' bookkeeping, built at its first use in a script call: a helper defined at the top is a closure
-- every call of every script including it builds again (~0.4 µs each on a single add), and only queues whose
-- jobs have groups need these. G.turns(base, n): reserves n turns of the rotation, returns the first.
-- G.join(base, level, grp, turn): a group's level list joins the rotation (at the back of its level) unless
-- it is in it. G.idle(base, grp): a group with no job waiting or active, no limits of its own and not paused
-- is forgotten. G.waiting(base, grp, delta, level): adds to a group's waiting jobs (and all groups', and
-- the level's); one left with none and nothing active is forgotten. G.pushed(base, level, grp, n, first): n jobs went into a group's
-- level list; first: it had none before, so it joins the rotation. G.rejoin(base, grp): every level list of
-- the group that has jobs joins the rotation (a group held back by its limit, or paused).
local GROUP_LIB = false
local function groups_lib()
  if GROUP_LIB then return GROUP_LIB end
  local G = {}
  function G.turns(base, n)
    return redis.call('HINCRBY', base .. 'meta', 'gturn', n) - n + 1
  end
  function G.join(base, level, grp, turn)
    redis.call('ZADD', base .. 'gring', 'NX', level * GROUP_SPAN + turn, level .. ':' .. grp)
  end
  function G.idle(base, grp)
    if redis.call('HEXISTS', base .. 'gwaiting', grp) == 0 and redis.call('HEXISTS', base .. 'gact', grp) == 0
        and redis.call('HEXISTS', base .. 'glimits', grp) == 0
        and redis.call('HEXISTS', base .. 'gpaused', grp) == 0 then
      redis.call('ZREM', base .. 'groups', grp)
      redis.call('HDEL', base .. 'gtok', grp)
      redis.call('HDEL', base .. 'gpark', grp)
    end
  end
  function G.waiting(base, grp, delta, level)
    local w = redis.call('HINCRBY', base .. 'gwaiting', grp, delta)
    redis.call('HINCRBY', base .. 'meta', 'gw', delta)
    redis.call('HINCRBY', base .. 'meta', 'gw' .. level, delta)
    if w <= 0 then
      redis.call('HDEL', base .. 'gwaiting', grp)
      G.idle(base, grp)
    end
  end
  function G.pushed(base, level, grp, n, first)
    GROUPED = true
    if not first then GROUP_QUEUED = GROUP_QUEUED + n end
    G.waiting(base, grp, n, level)
    if first then
      G.join(base, level, grp, G.turns(base, 1))
      redis.call('ZADD', base .. 'groups', 'NX', 0, grp)
    end
  end
  function G.rejoin(base, grp)
    for p = 1, LEVELS do
      if redis.call('EXISTS', base .. 'gwait:' .. p .. ':' .. grp) == 1 then
        G.join(base, p, grp, G.turns(base, 1))
      end
    end
  end
  GROUP_LIB = G
  return G
end

-- Ids going into their waiting lists, gathered by a script's loop (pushes: level key -> ids in order) and
-- pushed by push_waiting at its end with one command per list: RPUSH to the back (cmd nil), or LPUSH to the
-- head, where the last one gathered ends up first, as with one LPUSH each. A command per job cost Valkey
-- ~0.85 µs per job of the ~7.2 an add took (25 jobs per call). A caller that gathers must push before it
-- returns, each table with its own command.
-- The lists are pushed in the order their first ids were gathered (pushes[1], pushes[2], ...), so groups
-- join the rotation in the order their jobs came; a table built by hand ({[level] = ids}) in any order.
local function push_later(pushes, level, id)
  local ids = pushes[level]
  if ids then ids[#ids + 1] = id else pushes[level] = {id}; pushes[#pushes + 1] = level end
end
local function push_waiting(pushes, cmd)
  local order = pushes
  if #pushes == 0 then
    order = {}
    for level in pairs(pushes) do order[#order + 1] = level end
  end
  for _, level in ipairs(order) do
    local ids = pushes[level]
    local len
    for i = 1, #ids, 500 do len = redis.call(cmd or 'RPUSH', level, unpack(ids, i, math.min(i + 499, #ids))) end
    -- A group's list (level_key) is counted, and joins the rotation when these are its first jobs.
    local base, p, grp = string.match(level, '^(.-}:)gwait:(%d):(.*)$')
    if base then groups_lib().pushed(base, tonumber(p), grp, #ids, len == #ids) end
  end
end

-- Waiting jobs of all levels, the groups' (meta 'gw') too.
local function waiting_count(waiting)
  local n = tonumber(redis.call('HGET', string.sub(waiting, 1, -8) .. 'meta', 'gw')) or 0
  for p = 1, LEVELS do n = n + redis.call('LLEN', waiting .. ':' .. p) end
  return n
end

-- Takes up to `want` waiting ids: the heads of the levels, the first level first. Also returns each level's
-- end among them: the ids of level p are those after ends[p - 1] up to ends[p].
local function pop_waiting(waiting, want)
  local ids, ends = {}, {}
  for p = 1, LEVELS do
    if #ids < want then
      local got = redis.call('LPOP', waiting .. ':' .. p, want - #ids)
      if got then
        for i = 1, #got do ids[#ids + 1] = got[i] end
      end
    end
    ends[p] = #ids
  end
  return ids, ends
end

-- Takes one job out of waiting (a scan of its level's list); pri, grp: its 'pri' and 'grp' fields. Returns 1
-- if it was there.
local function remove_waiting(waiting, pri, id, grp)
  local own = level_key(waiting, pri, grp)
  local found = redis.call('LREM', own, 1, id) == 1 and own
  -- Not in the level its field names: moved to the first level by a priority bound (age_waiting.lua), or a
  -- field written without moving the job. Look in the others, the first level first.
  for p = 1, LEVELS do
    if found then break end
    local level = level_key(waiting, p, grp)
    found = level ~= own and redis.call('LREM', level, 1, id) == 1 and level
  end
  if not found then return 0 end
  if grp then
    local base, p = string.match(found, '^(.-}:)gwait:(%d):')
    groups_lib().waiting(base, grp, -1, p)
  end
  return 1
end

-- A job's state and the fields asked for: {st, ts, ...}. A job added waiting has no 'st' (includes/add.lua),
-- and every job has its 'ts', so the state is 'st', else 'waiting' when the job exists, else nil.
local function job_state(jkey, ...)
  local f = redis.call('HMGET', jkey, 'st', 'ts', ...)
  return f[1] or (f[2] and 'waiting'), f
end

-- Puts a job into waiting: at the back of its priority level, or with front at its head (a run that never
-- finished goes back to where it was taken from). pri, wt, grp: the job's 'pri', 'wt' and 'grp' fields as
-- the caller read them. fields: more job fields to write in the same HSET as the state. pushes (nil: the job
-- is pushed now): the caller's gathered pushes (push_later) of this direction (back, or front), which the
-- job joins.
local function place_waiting(waiting, jkey, id, pri, front, wt, fields, pushes, grp)
  local level = level_key(waiting, pri, grp)
  if pushes then
    push_later(pushes, level, id)
  else
    push_waiting({[level] = {id}}, front and 'LPUSH' or 'RPUSH')
  end
  fields[#fields + 1] = 'st'; fields[#fields + 1] = 'waiting'
  redis.call('HSET', jkey, unpack(fields))
  if wt then notify_job(string.sub(jkey, 1, #jkey - #id), id, jkey, 'waiting', wt) end
end

-- Puts a job into waiting. fresh=true puts it at the back of its priority level (a LIFO job, 'lf', at the
-- head, pushed now); otherwise at the head (a lost or handed-back run: it was at the head when claimed).
-- pushes: as place_waiting's. Only promotions call it (a watched call records job event 2, waiting).
local function to_waiting(waiting, jkey, id, fresh, pushes)
  local f = redis.call('HMGET', jkey, 'pri', 'wt', 'grp', 'lf')
  if EVENTS then job_event(string.sub(jkey, 1, #jkey - #id), id, 2) end
  if fresh and f[4] == '1' then
    place_waiting(waiting, jkey, id, f[1], true, f[2], {}, nil, f[3])
  else
    place_waiting(waiting, jkey, id, f[1], not fresh, f[2], {}, pushes, f[3])
  end
end

-- Fencing: is `token` the lease of the active job at jkey? Returns a code (0 held, -2 no such job,
-- -3 not held: expired and recovered, finished, or never this token) and the fields st, tok, then any
-- extra field names given.
-- A lease's fields, 'tok' and 'wid' (claim.lua), stay on the job after its run ends: they mean something only
-- while 'st' is 'active' (every reader checks it first, and the next claim overwrites them), so no script
-- spends a command per run deleting them (an HDEL cost Valkey ~1 µs per completed job).
local function lease_check(jkey, token, ...)
  local f = redis.call('HMGET', jkey, 'st', 'tok', ...)
  if not f[1] then  -- no such job, or one added waiting (includes/add.lua writes no 'st' then)
    if redis.call('EXISTS', jkey) == 1 then return -3, f end
    return -2, f
  end
  if f[1] ~= 'active' or f[2] ~= token then return -3, f end
  return 0, f
end

-- Members written to / removed from a zset with one command per 500 (one command for a batch costs far
-- less than one per member; chunks keep unpack within Lua's stack limit).
local function zadd_all(key, score, ids)
  for i = 1, #ids, 500 do
    local args = {}
    for j = i, math.min(i + 499, #ids) do args[#args + 1] = score; args[#args + 1] = ids[j] end
    redis.call('ZADD', key, unpack(args))
  end
end
local function zrem_all(key, ids)
  for i = 1, #ids, 500 do redis.call('ZREM', key, unpack(ids, i, math.min(i + 499, #ids))) end
end

-- Moves at most `limit` due delayed jobs to the back of their priority level.
-- Returns the number moved and the run-at of the next delayed job (-1 when none is left). The earliest is
-- read first: with none due (no delayed job, or none yet: every claim's case but a few) that one command
-- answers.
local function promote_due(delayed, waiting, prefix, now, limit)
  local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  if #first == 0 then return 0, -1 end
  local first_due = tonumber(first[2])
  if first_due > now then return 0, first_due end
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, limit)
  local pushes = {}
  for _, id in ipairs(due) do to_waiting(waiting, prefix .. id, id, true, pushes) end
  push_waiting(pushes)
  if #due > 0 then redis.call('ZREM', delayed, unpack(due)) end
  local nd = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  local next_due = -1
  if #nd > 0 then next_due = tonumber(nd[2]) end
  return #due, next_due
end

-- A job waiting for an external event (WaitForEvent: includes/external_events.lua) holds 'ewk', the keys it
-- waits for joined by newlines, and its job key is a member of each key's waiters set, named
-- '<prefix>:event-waiters:<key>' after the base of its job prefix (engine/keys.py event_waiters) or, when the
-- job holds 'ewq' (it waits on a Cluster), '<prefix>:{<queue>}:event-waiters:<key>' (queue_event_waiters).
-- Drops those registrations: for a job cancelled or deleted while it waits, woken, or waiting anew.
local function event_wait_drop(prefix, id, ewk)
  local base = string.match(prefix, '^(.*):{.*}:job:$') .. ':event-waiters:'
  if redis.call('HEXISTS', prefix .. id, 'ewq') == 1 then
    base = string.sub(prefix, 1, -5) .. 'event-waiters:'  -- the queue's own sets (a Cluster's layout)
  end
  for key in string.gmatch(ewk, '[^\n]+') do
    redis.call('SREM', base .. key, prefix .. id)
  end
end

-- A key of the job's queue that scripts derive instead of taking it in KEYS (same hash slot): the job
-- prefix is '<base>job:', so '<base>' .. name. engine/keys.py documents each such key.
local function queue_key(prefix, name)
  return string.sub(prefix, 1, -5) .. name
end

-- The flow hand-offs of jobs removed before they finished that this script call queued (on_removed), for
-- its reply: the caller carries them out at once when there are any (the janitor otherwise).
local REMOVED = {handed = 0}

-- Bookkeeping for a job deleted before it finished (RemoveJob, RemoveJobs, CleanQueue, DrainQueue, a redrive
-- taking a dead-letter copy), before its hash goes: the parents that wait for it (WaitForChildren: its 'par'
-- or 'kup') must stop waiting, so it gets a flow entry in the state 'removed', with `how` as its reason,
-- queued on the flow outbox like a finished job's (on_finished); services/flows.py hands it to each parent,
-- which counts it once however often it is carried out (children_done.lua). Only a job with a flow mark (flo:
-- the caller's own read has it, so a plain job costs no command here) reads more; a finished job never comes
-- here (its end was handed on when it finished). Returns 1 when a hand-off was queued.
local function on_removed(prefix, id, jkey, flo, how)
  if not flo then return 0 end
  local f = redis.call('HMGET', jkey, 'par', 'kup', 'name')
  if not f[1] and not f[2] then return 0 end
  -- Every field is written, so nothing of an older entry of the same id (a retried job's) is left in it.
  redis.call('HSET', queue_key(prefix, 'flow:' .. id), 'st', 'removed', 'res', '', 'rct', '', 'err', how,
    'name', f[3] or '', 'chn', '', 'par', f[1] or '', 'md', '', 'kup', f[2] or '')
  redis.call('RPUSH', queue_key(prefix, 'flow-outbox'), id)
  REMOVED.handed = REMOVED.handed + 1
  return 1
end

-- Deletes the hashes and log lists of the given job ids. unfinished: the jobs may still hold a dedup key
-- (waiting, delayed, active), released here, or wait for an external event (event_wait_drop); finished jobs
-- released theirs on finishing. how (nil: the whole queue goes, ObliterateQueue): the reason an unfinished
-- job's waiting parents are given (on_removed).
local function delete_hashes(prefix, ids, unfinished, how)
  for _, id in ipairs(ids) do
    if unfinished then
      local d = redis.call('HMGET', prefix .. id, 'ddk', 'ddt', 'ewk', 'flo', 'st')
      if d[1] and not d[2] then release_dedup(prefix, id, d[1]) end
      if d[3] then event_wait_drop(prefix, id, d[3]) end
      if how and d[5] ~= 'completed' and d[5] ~= 'failed' and d[5] ~= 'cancelled' then
        on_removed(prefix, id, prefix .. id, d[4], how)
      end
    end
    redis.call('DEL', prefix .. id, job_logs_key(prefix, id))
  end
end

-- Deletes the given job ids from a zset, with their hashes and log lists (delete_hashes).
local function delete_jobs(set, prefix, ids, unfinished, how)
  delete_hashes(prefix, ids, unfinished, how)
  if #ids > 0 then redis.call('ZREM', set, unpack(ids)) end
  return #ids
end

-- Deletes up to `limit` waiting jobs, from the heads of the levels, with their hashes, log lists and dedup
-- keys; then the groups' (those with jobs waiting, 'gwaiting', a few at a time). how: as delete_hashes'.
-- Returns how many.
local function delete_waiting(waiting, prefix, limit, how)
  local removed = 0
  local function from(level, grp, p)
    local ids = redis.call('LRANGE', level, 0, limit - removed - 1)
    if #ids > 0 then
      delete_hashes(prefix, ids, true, how)
      redis.call('LTRIM', level, #ids, -1)
      removed = removed + #ids
      if grp then groups_lib().waiting(string.sub(waiting, 1, -8), grp, -#ids, p) end
    end
  end
  for p = 1, LEVELS do
    if removed >= limit then break end
    from(waiting .. ':' .. p)
  end
  local gwaiting = string.sub(waiting, 1, -8) .. 'gwaiting'
  local cursor = '0'
  while removed < limit do
    local page = redis.call('HSCAN', gwaiting, cursor, 'COUNT', 100)
    for i = 1, #page[2], 2 do
      for p = 1, LEVELS do
        if removed < limit then from(level_key(waiting, p, page[2][i]), page[2][i], p) end
      end
    end
    cursor = page[1]
    if cursor == '0' then break end
  end
  return removed
end

-- Removes finished jobs older than age_ms (if > 0) or beyond count (if >= 0), bounded per call.
local function trim(set, prefix, age_ms, count, now)
  local removed = 0
  if age_ms > 0 then
    removed = delete_jobs(set, prefix,
      redis.call('ZRANGEBYSCORE', set, '-inf', now - age_ms, 'LIMIT', 0, TRIM_CHUNK))
  end
  if count >= 0 then
    local excess = redis.call('ZCARD', set) - count
    if excess > 0 then
      if excess > TRIM_CHUNK then excess = TRIM_CHUNK end
      removed = removed + delete_jobs(set, prefix, redis.call('ZRANGE', set, 0, excess - 1))
    end
  end
  return removed
end

-- The queue's retention defaults, concurrency cap and stall limit (meta fields kc_age, kc_count, kf_age,
-- kf_count, conc, max_stalled), its job events' watch deadline (evw: watched) and its default error history
-- length (d_ehn: record_error), read at most once per script call and queue (no script changes them): a
-- batch's keep policies, its trim, its freed slots and its recovered runs read them once.
local SETTINGS = false
local SETTINGS_OF = false
local function queue_settings(meta)
  if SETTINGS_OF ~= meta then
    SETTINGS = redis.call('HMGET', meta, 'kc_age', 'kc_count', 'kf_age', 'kf_count', 'conc', 'max_stalled',
      'evw', 'd_ehn')
    SETTINGS_OF = meta
  end
  return SETTINGS
end

-- Turns the call's job events on when the queue is watched (watched), for a script whose jobs' changes
-- read the queue's settings anyway (they free slots: slot_freed) or that is off the hot path.
local function watch_settings(meta, now)
  if not EVENTS then watched(queue_settings(meta)[7], now) end
end

-- Resolves a job's keep policy ("" = queue default, "r" = remove, "age:count" with 0 = default part)
-- into (remove, age_ms, count) using the queue's defaults in meta fields <kind>_age / <kind>_count.
local function keep_policy(meta, policy, kind)
  local d, at = queue_settings(meta), kind == 'kc' and 1 or 3
  local age, count = tonumber(d[at]) or 0, tonumber(d[at + 1]) or -1
  if policy == 'r' then return true, age, count end
  if policy ~= false and policy ~= '' then
    local a, c = string.match(policy, '^(%d+):(%d+)$')
    if a and tonumber(a) > 0 then age = tonumber(a) end
    if c and tonumber(c) > 0 then count = tonumber(c) end
  end
  return false, age, count
end

-- Error history (Job.errors): a job's last failed runs, in its hash field 'eh', one JSON array per run
-- [attempt, kind, ms, worker id, message, stack trace] and a newline between runs, oldest first (cjson
-- escapes a newline inside a string, so one only ever separates runs: appending and dropping the oldest cost
-- no decoding). How many are kept: the job's 'ehn' (JobOptions.error_history), else the queue's default
-- (meta 'd_ehn'), else ERRORS_KEPT; 0 keeps none ('err' and 'stk' hold the last failure anyway). The field
-- goes with the job's hash (every removal deletes it whole). Kinds are JobErrorKind's numbers.
local ERRORS_KEPT = 10
local ERR_RAISED = 1
local ERR_TIMEOUT = 2
local ERR_STALLED = 3
local ERR_CANCELLED = 4

-- A failed run into the history: 'eh' and its new value appended to fields (the caller's HSET of the run's
-- outcome, so the history costs no command of its own), or the field deleted when the job keeps none (its
-- setting became 0 since it had some). e: the job's 'ehn', 'eh' and 'wid' ("<worker id> <start ms>", as the
-- caller read them with its other fields); attempt: the run's attempt number.
local function record_error(meta, jkey, fields, e, attempt, kind, now, msg, stack)
  local keep = tonumber(e[1]) or tonumber(queue_settings(meta)[8]) or ERRORS_KEPT
  local old = e[2]
  if keep <= 0 then
    if old then redis.call('HDEL', jkey, 'eh') end
    return
  end
  local wid = e[3] or ''
  local h = cjson.encode({attempt, kind, now, string.match(wid, '^(.*) %d+$') or wid, msg, stack or ''})
  if old and old ~= '' then
    h = old .. '\n' .. h
    local starts, i = {}, 1
    while true do
      local nl = string.find(h, '\n', i, true)
      if not nl then break end
      starts[#starts + 1] = nl + 1
      i = nl + 1
    end
    -- #starts + 1 runs: the oldest go past keep.
    if #starts >= keep then h = string.sub(h, starts[#starts - keep + 1]) end
  end
  fields[#fields + 1] = 'eh'; fields[#fields + 1] = h
end

-- Bookkeeping for a job that has just finished (state 'completed', 'failed' for good or 'cancelled'),
-- before retention may delete it. Its dedup key, if held until it finishes (no ttl), is released, and its
-- waiters are told. A job in a flow (a chain link, a workflow step: field 'flo') gets its
-- outcome copied to a flow entry and queued on the flow outbox, which the server carries out (adding the
-- next link or steps, possibly in other queues) and then clears; 'kup' names the parents that waited for a job
-- that existed before (lua/children_attach.lua). Returns 1 when a flow hand-off was queued.
-- read: true when the caller passes the job's 'flo', 'ddk', 'ddt' and 'wt' fields (read in an HMGET it does
-- anyway, so a job in no flow costs no read here and no table); nil to read them here. A chain's last link
-- (flo 'e') hands nothing on when it completes (there is no next link): only its failure or cancel does.
local function on_finished(prefix, id, jkey, state, now, read, flo, ddk, ddt, wt)
  if read and (not flo or (flo == 'e' and state == 'completed')) then
    if ddk and not ddt then release_dedup(prefix, id, ddk) end
    if wt then notify_job(prefix, id, jkey, state, wt) end
    return 0
  end
  local f = redis.call('HMGET', jkey, 'flo', 'res', 'rct', 'err', 'name', 'chn', 'par', 'ddk', 'ddt', 'wt', 'md',
    'cxm', 'kup')
  if f[8] and not f[9] then release_dedup(prefix, id, f[8]) end
  notify_job(prefix, id, jkey, state, f[10])
  if not f[1] then return 0 end
  -- A completed job without 'res' returned JSON null, one without 'rct' JSON (complete.lua).
  local res = f[2] or (state == 'completed' and 'null' or '')
  -- A cancelled job's reason is its cancel's (an expiry's among them: includes/claim.lua), not an earlier
  -- run's failure.
  local err = f[4] or ''
  if state == 'cancelled' and f[12] then err = f[12] end
  -- A chain's next link inherits the job's metadata attributes, its trace context among them (flows.py).
  redis.call('HSET', queue_key(prefix, 'flow:' .. id), 'st', state, 'fts', now, 'res', res,
    'rct', f[3] or (res ~= '' and JSON_TYPE or ''), 'err', err, 'name', f[5] or '', 'chn', f[6] or '',
    'par', f[7] or '', 'md', (f[6] and f[11]) or '')
  -- The parents that named the job when it existed already (children_attach.lua), for most jobs none.
  if f[13] then redis.call('HSET', queue_key(prefix, 'flow:' .. id), 'kup', f[13]) end
  redis.call('RPUSH', queue_key(prefix, 'flow-outbox'), id)
  return 1
end

-- Moves an active or stalled job to failed for good, queues its dead-letter hand-off, applies retention.
-- attempt: the attempts it made, for its job event (nil: not known).
-- With a dead-letter queue, retention waits for the hand-off (handoff_done.lua trims once the outbox is
-- empty): a trim here would delete jobs failed just before whose copies are not written yet.
local function fail_for_good(meta, failed, outbox, prefix, id, now, reason, stack, attempt)
  local jkey = prefix .. id
  if EVENTS then job_event(prefix, id, 6, nil, attempt, string.sub(reason, 1, EV_REASON)) end
  STATS.failed = STATS.failed + 1
  redis.call('HSET', jkey, 'st', 'failed', 'fts', now, 'err', reason, 'stk', stack)
  redis.call('ZADD', failed, now, id)
  on_finished(prefix, id, jkey, 'failed', now)
  local dlq = redis.call('HGET', meta, 'dlq')
  if dlq and dlq ~= '' then redis.call('RPUSH', outbox, id) end
  local remove, age, count = keep_policy(meta, redis.call('HGET', jkey, 'kf'), 'kf')
  if dlq and dlq ~= '' then
    -- A job to remove on failure: the hand-off deletes it once the copy is written.
    if remove then redis.call('HSET', jkey, 'rm', '1') end
    return
  end
  if remove then delete_jobs(failed, prefix, {id}) end
  trim(failed, prefix, age, count, now)
end

-- Runs ended in this script call per group (run_ended), recorded once per group by slot_freed.
local GROUP_ENDED = false

-- A run of a job ended (the job left active): its deadline goes if the job has a timeout (its 'to' field),
-- and its group counts one active job less (its 'grp' field; both read by the caller along with others):
-- counted here, recorded by the slot_freed the caller calls once its runs ended.
local function run_ended(prefix, id, timeout, grp)
  if timeout and timeout ~= '0' then redis.call('ZREM', queue_key(prefix, 'deadlines'), id) end
  if grp then
    if not GROUP_ENDED then GROUP_ENDED = {} end
    local n = GROUP_ENDED[grp]
    if n then GROUP_ENDED[grp] = n + 1 else GROUP_ENDED[#GROUP_ENDED + 1] = grp; GROUP_ENDED[grp] = 1 end
  end
end

-- Records the runs that ended per group (run_ended): a few commands for all the call's groups, not per group
-- or job. A group its concurrency limit held back takes its turns again. Returns whether one did.
local function groups_ended(prefix)
  if not GROUP_ENDED then return false end
  local base = string.sub(prefix, 1, -5)
  local names = {}
  for i = 1, #GROUP_ENDED do names[i] = GROUP_ENDED[i] end
  local a = redis.call('HMGET', base .. 'gact', unpack(names))
  local p = redis.call('HMGET', base .. 'gpark', unpack(names))
  local set, idle, parked = {}, {}, {}
  for i, grp in ipairs(names) do
    local n = (tonumber(a[i]) or 0) - GROUP_ENDED[grp]
    if n > 0 then
      set[#set + 1] = grp; set[#set + 1] = n
    else
      idle[#idle + 1] = grp
    end
    if p[i] then parked[#parked + 1] = grp end
  end
  GROUP_ENDED = false
  if #set > 0 then redis.call('HSET', base .. 'gact', unpack(set)) end
  if #idle > 0 then redis.call('HDEL', base .. 'gact', unpack(idle)) end
  if #parked > 0 then
    redis.call('HDEL', base .. 'gpark', unpack(parked))
    for _, grp in ipairs(parked) do groups_lib().rejoin(base, grp) end
  end
  for _, grp in ipairs(idle) do groups_lib().idle(base, grp) end
  return #parked > 0
end

-- Records the runs that ended (groups_ended) and wakes the dispatchers of every server when jobs of a queue
-- with a concurrency cap (meta 'conc') left active, or a run's end let a group held back by its own limit
-- take turns again, so the freed slots fill at once without polling. Called once per script that ended
-- runs, after them.
local function slot_freed(meta, prefix)
  if groups_ended(prefix) or (tonumber(queue_settings(meta)[5]) or 0) > 0 then
    local base, queue = string.match(prefix, '^(.*):{(.*)}:job:$')
    redis.call('PUBLISH', base .. ':events', 'w ' .. queue)
  end
end

-- Ends a job as cancelled; the caller took it out of its state set (waiting, delayed, active). It is kept
-- in the cancelled set under the failed-job retention (the job's 'kf', else the queue's). Returns 1 when a
-- flow hand-off was queued (on_finished). kind: its job event (nil: 10, cancelled; 12 for an expiry).
-- fields (or nil): more job fields to write in the same HSET (a stopped run's error history).
local function finish_cancelled(meta, prefix, id, now, kind, fields)
  local jkey = prefix .. id
  local ewk = redis.call('HGET', jkey, 'ewk')
  if ewk then
    event_wait_drop(prefix, id, ewk)
    redis.call('HDEL', jkey, 'ewk')
  end
  if EVENTS then job_event(prefix, id, kind or 10) end
  local cancelled = queue_key(prefix, 'cancelled')
  if fields then
    fields[#fields + 1] = 'st'; fields[#fields + 1] = 'cancelled'
    fields[#fields + 1] = 'fts'; fields[#fields + 1] = now
    redis.call('HSET', jkey, unpack(fields))
  else
    redis.call('HSET', jkey, 'st', 'cancelled', 'fts', now)
  end
  redis.call('ZADD', cancelled, now, id)
  local handed = on_finished(prefix, id, jkey, 'cancelled', now)
  local remove, age, count = keep_policy(meta, redis.call('HGET', jkey, 'kf'), 'kf')
  if remove then delete_jobs(cancelled, prefix, {id}) end
  trim(cancelled, prefix, age, count, now)
  return handed
end

-- Returns a lost job (dead worker or expired lease) to the head of its level, or fails it past its stall
-- limit: one read of the job, one write when it goes back. fronts: the caller's gathered pushes to the head
-- of their levels (push_later), which it pushes with push_waiting(fronts, 'LPUSH') before it returns. The
-- caller adds the stalls (codes 1 and 2) to the queue's 'stalled_total' once for its batch.
-- Returns 0 when the job is gone, 1 when it went back to waiting, 2 when it failed, 3 when it ended cancelled
-- (a cancel had been asked while it ran: its worker is gone, so it never reported the stop). The lost run
-- goes into the job's error history (record_error: stalled, or cancelled with the cancel's reason), under
-- the attempt it was (a lost run uses none). lost: the history's message for a lost run.
local function recover_stalled(meta, waiting, failed, outbox, prefix, id, now, fronts, lost)
  local jkey = prefix .. id
  -- Every job has its 'ts': the read is the existence check too.
  local c = redis.call('HMGET', jkey, 'ts', 'cxr', 'to', 'stc', 'ms', 'pri', 'wt', 'st', 'grp', 'ehn', 'eh', 'wid',
    'atm', 'cxm')
  if not c[1] then return 0 end
  if c[8] == 'waiting' then
    -- Put back by a call that stopped on an error before its pushes (reap.lua): its stall is counted on the
    -- job already; only its place in the list is missing.
    place_waiting(waiting, jkey, id, c[6], true, c[7], {}, fronts, c[9])
    return 1
  end
  run_ended(prefix, id, c[3], c[9])
  local attempt = (tonumber(c[13]) or 0) + 1
  if c[2] == '1' then
    local e = {}
    record_error(meta, jkey, e, {c[10], c[11], c[12]}, attempt, ERR_CANCELLED, now,
      'cancelled' .. (c[14] and c[14] ~= '' and (': ' .. c[14]) or ''), '')
    finish_cancelled(meta, prefix, id, now, nil, e)
    return 3
  end
  local stc = (tonumber(c[4]) or 0) + 1
  local ms = tonumber(c[5]) or 0
  if ms == 0 then ms = tonumber(queue_settings(meta)[6]) or 1 end
  local w = {'stc', stc, 'p', NOT_PLAIN}
  if stc > ms then
    local reason = 'job stalled more than the allowed ' .. ms .. ' times'
    record_error(meta, jkey, w, {c[10], c[11], c[12]}, attempt, ERR_STALLED, now, lost .. '; ' .. reason, '')
    redis.call('HSET', jkey, unpack(w))
    fail_for_good(meta, failed, outbox, prefix, id, now, reason, '')
    return 2
  end
  if EVENTS then job_event(prefix, id, 9) end
  record_error(meta, jkey, w, {c[10], c[11], c[12]}, attempt, ERR_STALLED, now, lost, '')
  place_waiting(waiting, jkey, id, c[6], true, c[7], w, fronts, c[9])
  return 1
end

-- The job fields fail_attempt reads, in this order from f[3] on: what lease_check(jkey, token,
-- unpack(ATTEMPT_FIELDS)) returns.
local ATTEMPT_FIELDS = {'att', 'atm', 'bt', 'bd', 'bj', 'bm', 'wt', 'to', 'cxr', 'pri', 'grp', 'ehn', 'eh', 'wid'}

-- Records a failed run of an active job (the caller checked its lease and took it out of active) and
-- decides what follows, for a worker's failure (fail.lua) and a timeout (time_out.lua) alike: the run
-- counts as an attempt, goes into the job's error history (record_error, as kind: ERR_RAISED or
-- ERR_TIMEOUT) and counts by its kind in STATS (the queue's raised / timed-out totals); with attempts left the job is retried after its backoff, unless a cancel was asked
-- meanwhile (then it ends cancelled); with none left, or with no_retry, it fails for good. A retry counts in
-- READY (the caller publishes it).
-- f: ATTEMPT_FIELDS from f[3] on. pushes: the caller's gathered pushes (push_later), which it pushes before
-- it returns (a retry now joins them). Returns a code (0 retry now, 1 retry delayed, 2 failed for good,
-- 3 cancelled) and a run-at (the retry's: now for 0; -1 for 2 and 3).
local function fail_attempt(meta, waiting, delayed, failed, outbox, prefix, id, now, msg, stack, no_retry, f,
    pushes, kind)
  local jkey = prefix .. id
  run_ended(prefix, id, f[10], f[13])
  if kind == ERR_TIMEOUT then STATS.timed_out = STATS.timed_out + 1 else STATS.raised = STATS.raised + 1 end
  local atm = (tonumber(f[4]) or 0) + 1
  if no_retry or atm >= (tonumber(f[3]) or DEFAULT_ATT) then
    local w = {'atm', atm, 'p', NOT_PLAIN}
    record_error(meta, jkey, w, {f[14], f[15], f[16]}, atm, kind, now, msg, stack)
    redis.call('HSET', jkey, unpack(w))
    fail_for_good(meta, failed, outbox, prefix, id, now, msg, stack, atm)
    return 2, -1
  end
  -- The run's outcome is written with the job's next state: one HSET per failed run. A retry is ready again
  -- now ('rdy') or at its run-at (after its backoff): its wait counts from there (metrics.lua).
  local ran = {'atm', atm, 'p', NOT_PLAIN, 'err', msg, 'stk', stack}
  record_error(meta, jkey, ran, {f[14], f[15], f[16]}, atm, kind, now, msg, stack)
  if f[11] == '1' then
    redis.call('HSET', jkey, unpack(ran))
    finish_cancelled(meta, prefix, id, now)
    return 3, -1
  end
  local delay = tonumber(f[6]) or 0
  if f[5] == '2' then delay = delay * 2 ^ (atm - 1) end
  local jitter = tonumber(f[7]) or 0
  if jitter > 0 then delay = delay + math.random() * jitter * delay end
  local cap = tonumber(f[8]) or 0
  if cap > 0 and delay > cap then delay = cap end
  delay = math.floor(delay)
  if EVENTS then
    job_event(prefix, id, 7, nil, atm, string.sub(msg, 1, EV_REASON), now + math.max(delay, 0))
  end
  if delay <= 0 then
    ran[#ran + 1] = 'rdy'; ran[#ran + 1] = now
    place_waiting(waiting, jkey, id, f[12], false, f[9], ran, pushes, f[13])
    READY.waiting = READY.waiting + 1
    return 0, now
  end
  ran[#ran + 1] = 'st'; ran[#ran + 1] = 'delayed'; ran[#ran + 1] = 'run'; ran[#ran + 1] = now + delay
  redis.call('HSET', jkey, unpack(ran))
  redis.call('ZADD', delayed, now + delay, id)
  notify_job(prefix, id, jkey, 'delayed', f[9])
  ready_at(now + delay)
  return 1, now + delay
end

-- Wakes the servers whose workers wait for the queue's jobs, and arms promotion timers for delays.
-- added_waiting: jobs this call made waiting; earliest: the earliest run-at of those it made delayed (-1 =
-- none). Only a claim that left the queue with no ready job marks it 'hungry' (claim.lua): the first jobs
-- made ready since publish 'w' and clear the mark, so adds to a queue whose workers are busy (or absent)
-- publish nothing, and no server spends a wake-up on them; nor do jobs queued behind others of their group
-- (GROUP_QUEUED). Returns 1 when it published 'w', else 0.
local function publish_ready(meta, channel, queue, added_waiting, earliest)
  added_waiting = added_waiting - GROUP_QUEUED
  local woke = 0
  if added_waiting > 0 and redis.call('HDEL', meta, 'hungry') == 1 then
    redis.call('PUBLISH', channel, 'w ' .. queue)
    woke = 1
  end
  if earliest >= 0 then
    redis.call('PUBLISH', channel, 'd ' .. queue .. ' ' .. string.format('%d', earliest))
  end
  return woke
end
