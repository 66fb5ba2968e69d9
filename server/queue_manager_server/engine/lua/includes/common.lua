-- common.lua: helpers shared by the scripts (inlined by engine/scripts.py where a script says
-- `-- @include common`). Nothing here writes on its own; callers validate before calling.

-- Waiting score = priority * 2^40 + seq: priority order, FIFO within a level, exact below 2^53.
local PRI_SHIFT = 1099511627776
-- Trimming of finished jobs removes at most this many per call, keeping every script O(batch).
local TRIM_CHUNK = 1000

-- Redis server time in milliseconds: one clock for all server processes, so their skew never matters.
local function now_ms()
  if redis.replicate_commands then pcall(redis.replicate_commands) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Puts a job into waiting. fresh=true gives it a new place at the back of its priority level.
local function to_waiting(meta, waiting, jkey, id, fresh)
  local f = redis.call('HMGET', jkey, 'pri', 'seq')
  local seq = tonumber(f[2])
  if fresh then
    seq = redis.call('HINCRBY', meta, 'seq', 1)
    redis.call('HSET', jkey, 'seq', seq)
  end
  redis.call('ZADD', waiting, tonumber(f[1]) * PRI_SHIFT + seq, id)
  redis.call('HSET', jkey, 'st', 'waiting')
end

-- Fencing: is `token` the lease of the active job at jkey? Returns a code (0 held, -2 no such job,
-- -3 not held: expired and recovered, finished, or never this token) and the fields st, tok, then any
-- extra field names given.
local function lease_check(jkey, token, ...)
  local f = redis.call('HMGET', jkey, 'st', 'tok', ...)
  if not f[1] then return -2, f end
  if f[1] ~= 'active' or f[2] ~= token then return -3, f end
  return 0, f
end

-- Moves at most `limit` due delayed jobs to the back of their priority level.
-- Returns the number moved and the run-at of the next delayed job (-1 when none is left).
local function promote_due(meta, delayed, waiting, prefix, now, limit)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do to_waiting(meta, waiting, prefix .. id, id, true) end
  if #due > 0 then redis.call('ZREM', delayed, unpack(due)) end
  local nd = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  local next_due = -1
  if #nd > 0 then next_due = tonumber(nd[2]) end
  return #due, next_due
end

-- Deletes the given job ids from a zset and their hashes.
local function delete_jobs(set, prefix, ids)
  for _, id in ipairs(ids) do redis.call('DEL', prefix .. id) end
  if #ids > 0 then redis.call('ZREM', set, unpack(ids)) end
  return #ids
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

-- Resolves a job's keep policy ("" = queue default, "r" = remove, "age:count" with 0 = default part)
-- into (remove, age_ms, count) using the queue's defaults in meta fields <kind>_age / <kind>_count.
local function keep_policy(meta, policy, kind)
  local d = redis.call('HMGET', meta, kind .. '_age', kind .. '_count')
  local age, count = tonumber(d[1]) or 0, tonumber(d[2]) or -1
  if policy == 'r' then return true, age, count end
  if policy ~= false and policy ~= '' then
    local a, c = string.match(policy, '^(%d+):(%d+)$')
    if a and tonumber(a) > 0 then age = tonumber(a) end
    if c and tonumber(c) > 0 then count = tonumber(c) end
  end
  return false, age, count
end

-- A key of the job's queue that scripts derive instead of taking it in KEYS (same hash slot): the job
-- prefix is '<base>job:', so '<base>' .. name. engine/keys.py documents each such key.
local function queue_key(prefix, name)
  return string.sub(prefix, 1, -5) .. name
end

-- Bookkeeping for a job that has just finished (state 'completed', 'failed' for good or 'cancelled'),
-- before retention may delete it. A job in a flow (a chain link, a workflow step: field 'flo') gets its
-- outcome copied to a flow entry and queued on the flow outbox, which the server carries out (adding the
-- next link or steps, possibly in other queues) and then clears. Returns 1 when a flow hand-off was queued.
local function on_finished(prefix, id, jkey, state, now)
  local f = redis.call('HMGET', jkey, 'flo', 'res', 'rct', 'err', 'name', 'chn', 'par')
  if not f[1] then return 0 end
  redis.call('HSET', queue_key(prefix, 'flow:' .. id), 'st', state, 'fts', now, 'res', f[2] or '',
    'rct', f[3] or '', 'err', f[4] or '', 'name', f[5] or '', 'chn', f[6] or '', 'par', f[7] or '')
  redis.call('RPUSH', queue_key(prefix, 'flow-outbox'), id)
  return 1
end

-- Moves an active or stalled job to failed for good, queues its dead-letter hand-off, applies retention.
local function fail_for_good(meta, failed, outbox, prefix, id, now, reason, stack)
  local jkey = prefix .. id
  redis.call('HSET', jkey, 'st', 'failed', 'fts', now, 'err', reason, 'stk', stack)
  redis.call('HDEL', jkey, 'tok', 'wid', 'lex')
  redis.call('ZADD', failed, now, id)
  on_finished(prefix, id, jkey, 'failed', now)
  local dlq = redis.call('HGET', meta, 'dlq')
  if dlq and dlq ~= '' then redis.call('RPUSH', outbox, id) end
  local remove, age, count = keep_policy(meta, redis.call('HGET', jkey, 'kf'), 'kf')
  if remove then
    if dlq and dlq ~= '' then
      redis.call('HSET', jkey, 'rm', '1')   -- the hand-off deletes it once the copy is written
    else
      delete_jobs(failed, prefix, {id})
    end
  end
  trim(failed, prefix, age, count, now)
end

-- Returns a lost job (dead worker or expired lease) to waiting, or fails it past its stall limit.
-- Returns 1 when it went back to waiting, 2 when it failed.
local function recover_stalled(meta, waiting, failed, outbox, prefix, id, now)
  local jkey = prefix .. id
  local stc = redis.call('HINCRBY', jkey, 'stc', 1)
  redis.call('HINCRBY', meta, 'stalled_total', 1)
  redis.call('HDEL', jkey, 'tok', 'wid', 'lex')
  local ms = tonumber(redis.call('HGET', jkey, 'ms')) or 0
  if ms == 0 then ms = tonumber(redis.call('HGET', meta, 'max_stalled')) or 1 end
  if stc > ms then
    fail_for_good(meta, failed, outbox, prefix, id, now, 'job stalled more than the allowed ' .. ms .. ' times', '')
    return 2
  end
  to_waiting(meta, waiting, jkey, id, false)
  return 1
end
