-- event_push.lua: what a push of an external event does in one queue, shared by push_event.lua (every queue
-- in one step, on one Redis server) and deliver_event.lua (one queue's share of a push recorded on a Cluster
-- by record_event.lua), and by wake_event_batch.lua. Needs common.lua, add.lua, stats.lua and
-- external_events.lua included first.
--
-- A push that finds more waiters than one script call should wake (WAKE_BATCH in services/long_pushes.py)
-- is carried out in batches, so no call holds the server for long: its first step renames the key's
-- waiters set to the push's own snapshot (take_snapshot), so the waits parked after it join a fresh set and
-- are not this push's to wake, and each later call pops a batch of the snapshot until it is empty. The
-- first step's time in microseconds, the cut, covers the one case the snapshot alone does not: a job of the
-- snapshot whose wait ended (another key's push, its timeout) and which waits for the key again before its
-- batch comes is parked after the cut ('ewt'), and is left to a later push.

-- Moves the waiters set `set` to `snapshot` (kept with no expiry until its last member is popped).
local function take_snapshot(set, snapshot)
  if redis.call('EXISTS', set) == 1 then
    redis.call('RENAME', set, snapshot)
    redis.call('PERSIST', snapshot)
  end
end

-- Wakes the jobs `ids` of the queue of job prefix `prefix` that are still parked for `key`: each goes back
-- to waiting, at the back of its level, with `tail` (the event as a Job, includes/external_events.lua)
-- appended to its 'par'; the servers serving the queue are woken. A member no longer parked for the key is
-- dropped from `set`, the waiters set it came from. With `cut` (a push in batches), a job parked after it is
-- left parked. Appends queue and id of each job woken to `woken`.
local function wake_waiters(prefix, ids, set, key, tail, channel, now, woken, cut)
  local meta, delayed = queue_key(prefix, 'meta'), queue_key(prefix, 'delayed')
  local waiting = queue_key(prefix, 'waiting')
  local queue = string.match(prefix, '^.*:{(.*)}:job:$')
  watch_settings(meta, now)
  READY.waiting, GROUP_QUEUED = 0, 0
  for _, id in ipairs(ids) do
    local jkey = prefix .. id
    local f = redis.call('HMGET', jkey, 'st', 'ewk', 'ewp', 'par', 'evl', 'ewt')
    if f[1] == 'delayed' and f[2] and waits_for(f[2], key)
        and tonumber(redis.call('ZSCORE', delayed, id)) == tonumber(f[3])
        and not (cut and f[6] and tonumber(f[6]) > cut) then
      event_wait_drop(prefix, id, f[2])
      redis.call('HDEL', jkey, 'ewk', 'ewp', 'ewt', 'run')
      redis.call('HSET', jkey, 'par', (f[4] or '') .. tail, 'evl', (tonumber(f[5]) or 0) + #tail,
        'p', NOT_PLAIN, 'rdy', now)
      redis.call('ZREM', delayed, id)
      to_waiting(waiting, jkey, id, true, nil)
      READY.waiting = READY.waiting + 1
      woken[#woken + 1] = queue
      woken[#woken + 1] = id
    else
      redis.call('SREM', set, jkey)
    end
  end
  publish_ready(meta, channel, queue, READY.waiting, -1)
  publish_events(prefix, now)
  EVENTS = false
end

-- Wakes the jobs of `members` (job keys of any queues) still parked for `key`, each queue's in one pass
-- (wake_waiters); a member that names no job is dropped from `set`.
local function wake_members(members, set, key, tail, channel, now, woken, cut)
  local queues, order = {}, {}
  for _, jkey in ipairs(members) do
    local prefix, id = string.match(jkey, '^(.-}:job:)(.*)$')
    if prefix then
      if not queues[prefix] then
        queues[prefix] = {}
        order[#order + 1] = prefix
      end
      table.insert(queues[prefix], id)
    else
      redis.call('SREM', set, jkey)
    end
  end
  for _, prefix in ipairs(order) do
    wake_waiters(prefix, queues[prefix], set, key, tail, channel, now, woken, cut)
  end
end

-- Adds the n jobs of the event triggers to one queue, as fire_schedule.lua adds a schedule's: ARGV[b..] holds
-- them, 4 arguments each (header, data, metadata, extra fields: includes/add.lua). A queue deleted since its
-- trigger was read gets none. Appends queue and id of each job to `added`.
local function add_trigger_jobs(meta, waiting, delayed, prefix, queue, b, n, channel, now, added)
  if redis.call('EXISTS', meta) == 0 then return end
  local d = add_defaults(meta)
  watched(d[21], now)
  local pushes, created, ready, earliest = {}, 0, 0, -1
  GROUP_QUEUED = 0
  for i = 0, n - 1 do
    local at = b + i * 4
    local h = split_header(ARGV[at])
    local code, run, got = insert_job(meta, waiting, delayed, prefix, d, now, h, ARGV[at + 1], ARGV[at + 2],
      ARGV[at + 3], pushes)
    inserted_event(prefix, code, got, h[2], run)
    if code == 1 or code == 2 then created = created + 1 end
    if code == 1 or code == 5 then
      ready = ready + 1
    elseif run >= 0 and (earliest < 0 or run < earliest) then
      earliest = run
    end
    added[#added + 1] = queue
    added[#added + 1] = got or h[1]
  end
  push_waiting(pushes)
  publish_ready(meta, channel, queue, ready, earliest)
  STATS.added = created
  write_stats(prefix, now)
  publish_events(prefix, now)
  EVENTS = false
end
