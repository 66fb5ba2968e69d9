-- requeue.lua: a finished job (failed or cancelled) back to waiting with its attempts counted afresh,
-- shared by retry_job.lua and retry_jobs.lua. Needs common.lua included first.
--
-- Reset: attempts made, attempts started and stalled count (so attempts=3 means 3 more runs), finish time,
-- result, progress, the dead-letter hand-off's delete-after flag (rm), and a pending cancel (cxr: the next
-- run must not be stopped by the cancel of an earlier one; the reason, cxm, stays as history), run-at.
-- 'rdy' becomes now: its wait counts from here (metrics.lua, age_waiting.lua), not from its add. Kept: data
-- and options, the last failure (err, stk: what went wrong until a new run fails), the log lines, flow
-- fields. A dedup key it released on finishing is not taken again. A job with an expiry ('exa') gets a new
-- one ('exp'), counted from now: retrying an expired job by hand means it should run.
--
-- A job in a flow (a workflow step, a chain link) also gets a flow entry 'retried', queued on the flow
-- outbox (flow_retried): the hand-off reopens its workflow step (wf_step_done.lua, outcome r). It replaces
-- an outcome entry not carried out yet: the failure this retry undoes is never recorded.

-- Moves job `id` to the back of its priority level; the caller takes it out of its finished state's zset.
-- pri, wt, exa, grp: the job's 'pri', 'wt', 'exa' and 'grp' fields as the caller read them (with its other
-- fields, in one read). now: Redis time (ms). pushes: as common.lua place_waiting's (nil: pushed now).
local function requeue(waiting, prefix, id, pri, wt, exa, now, pushes, grp)
  local jkey = prefix .. id
  if EVENTS then job_event(prefix, id, 2) end
  -- Absent counts read 0; 'ats' is an older server's attempts started (claim.lua no longer stores it).
  redis.call('HDEL', jkey, 'atm', 'ats', 'stc', 'fts', 'res', 'rct', 'prog', 'rm', 'run', 'cxr')
  exa = tonumber(exa)
  if exa then redis.call('ZADD', queue_key(prefix, 'expiring'), now + exa, id) end
  place_waiting(waiting, jkey, id, pri, false, wt, exa and {'rdy', now, 'exp', now + exa} or {'rdy', now},
    pushes, grp)
end

-- A flow job (flo: its 'flo' field) back to waiting: its entry says 'retried' (with its 'par': the hand-off
-- finds its workflow step there) and it joins the flow outbox. Returns 1 when queued, else 0.
local function flow_retried(prefix, id, flo, par, now)
  if not flo then return 0 end
  local entry = queue_key(prefix, 'flow:' .. id)
  redis.call('DEL', entry)
  redis.call('HSET', entry, 'st', 'retried', 'fts', now, 'par', par or '')
  redis.call('RPUSH', queue_key(prefix, 'flow-outbox'), id)
  return 1
end
