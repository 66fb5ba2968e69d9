-- children.lua: a job's children added at run time (WaitForChildren: services/children.py), shared by
-- children_add.lua, children_wait.lua and children_done.lua. Needs common.lua included first.
--
-- Everything is kept in the parent's own hash, so it goes with the job whatever deletes it (retention,
-- RemoveJob, obliterate) and no other key can be left behind. Per child a field 'k:<child id>' holding
-- '<seq> <queue>' while it runs and '<seq> <queue> <outcome>' once it has finished (the outcome is an
-- encoded Job holding that one ChildJob: engine/children.py); seq numbers the children in the order they
-- were added. Besides: kseq (children recorded), kpn (children not finished), kgn (waits ended: the number
-- in each child's id), kgg and kgc (the wait and the number of children the last call recorded, so a call
-- repeated after a lost run prunes what it no longer names), kgs (kseq before the wait's first call: a
-- repeated call prunes only children after it), 'kd:<derived id>' ('<seq> <id>': the job a dedup child's
-- key resolved to, children_link.lua), kpb (the job's 'par' before any outcome). A child named by its own
-- job_id or dedup key that existed already keeps its parents in its own 'kup' (children_attach.lua): one
-- job may have several.
--
-- A job parked until its children finish is in delayed with the score CHILDREN_PARKED and no 'run': no
-- promotion ever falls due for it, and listings show it last among the delayed jobs. Only that score wakes
-- it: a job an operator promoted or rescheduled meanwhile runs on its own terms.
local CHILDREN_PARKED = 253402300799999

-- The outcomes of the job's finished children, in the order the children were added, as one encoded Job
-- (protobuf concatenation appends repeated fields).
local function children_outcomes(jkey)
  local all = redis.call('HGETALL', jkey)
  local rows = {}
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 2) == 'k:' then
      local seq, outcome = string.match(all[i + 1], '^(%d+) %S+ (.*)$')
      if seq then rows[#rows + 1] = {tonumber(seq), outcome} end
    end
  end
  table.sort(rows, function(a, b) return a[1] < b[1] end)
  local parts = {}
  for i, row in ipairs(rows) do parts[i] = row[2] end
  return table.concat(parts)
end

-- Puts a parked job (or one whose run just ended) back into waiting at the back of its level, its
-- children's outcomes in 'par' so its next run is delivered with them (claim.lua reads 'par'). The 'par' it
-- writes holds nothing of an external event wait (includes/external_events.lua): 'evl' goes back to 0.
local function children_wake(waiting, delayed, jkey, id, now)
  local base = redis.call('HGET', jkey, 'kpb') or ''
  redis.call('HSET', jkey, 'par', base .. children_outcomes(jkey), 'p', NOT_PLAIN, 'rdy', now, 'evl', 0)
  redis.call('ZREM', delayed, id)
  redis.call('HDEL', jkey, 'run')
  to_waiting(waiting, jkey, id, true, nil)
  READY.waiting = READY.waiting + 1
end
