-- external_events.lua: waits for external events (WaitForEvent, PushEvent: services/external_events.py),
-- shared by event_wait.lua and push_event.lua. Needs common.lua included first.
--
-- A job waiting for an event is parked in delayed, scored with its timeout's deadline (the promoter runs it
-- again then, with no event) or, with no timeout, EVENT_PARKED (no promotion ever falls due; listings show it
-- last among the delayed jobs, before the jobs parked for their children). Its hash holds 'ewk' (the keys it
-- waits for, joined by newlines), 'ewp' (the score it was parked with: only a job still at that score is
-- woken, so one an operator promoted or rescheduled meanwhile runs on its own terms) and 'ewt' (when it was
-- parked, in microseconds: a push carried out in batches wakes only the waits parked before its cut,
-- includes/event_push.lua), and its job key is a member of each key's waiters set (common.lua
-- event_wait_drop names them). A member whose job is no longer parked for that key (it timed out, ran, was
-- promoted) is dropped by the next push of the key; the set of a key whose waits all have timeouts expires an
-- hour after the last of them.
--
-- What the job's runs see travels in 'par', which every claim and GetJob merge into the Job (encoded Jobs
-- concatenate): the wait appends a Job holding event_wait (keys and deadline), a push appends one holding
-- event. 'evl' is how many bytes at the end of 'par' the last wait and its event took, so the next wait (or
-- children added at run time: includes/children.lua) starts again from 'par' without them.
local EVENT_PARKED = 253402300799998
-- How long a waiters set outlives the latest timeout of the waits in it (the promoter may run a job a moment
-- after its deadline; a stale member is harmless, a missing one would lose a wake).
local EVENT_WAITERS_SLACK = 3600000

-- Protobuf encoding of what the scripts add to the messages the server encoded (types.proto field numbers:
-- Job.event_wait 34, Job.event 35, EventWait.until 2, ExternalEvent.pushed_at 4).
local PB_JOB_EVENT_WAIT, PB_JOB_EVENT, PB_WAIT_UNTIL, PB_EVENT_PUSHED_AT = 34, 35, 2, 4
local function pb_uvarint(n)
  local out = {}
  while n >= 128 do
    out[#out + 1] = string.char(n % 128 + 128)
    n = math.floor(n / 128)
  end
  out[#out + 1] = string.char(n)
  return table.concat(out)
end
-- A length-delimited field: its tag (wire type 2), its length, its bytes.
local function pb_bytes(field, bytes)
  return pb_uvarint(field * 8 + 2) .. pb_uvarint(#bytes) .. bytes
end
-- A google.protobuf.Timestamp of a time in ms (seconds field 1, nanos field 2; zeros are left out).
local function pb_timestamp(ms)
  local s, nanos = math.floor(ms / 1000), (ms % 1000) * 1000000
  local out = ''
  if s > 0 then out = pb_uvarint(8) .. pb_uvarint(s) end
  if nanos > 0 then out = out .. pb_uvarint(16) .. pb_uvarint(nanos) end
  return out
end

-- The job's 'par' without what its last wait appended ('evl').
local function par_base(par, evl)
  par = par or ''
  return string.sub(par, 1, #par - (tonumber(evl) or 0))
end

-- The time in microseconds: a wait's 'ewt' and a push's cut (includes/event_push.lua) compare on it, so a
-- wait parked after a long push began is told apart from one parked before, down to the microsecond.
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- Is key one of the newline-joined keys in ewk?
local function waits_for(ewk, key)
  for k in string.gmatch(ewk, '[^\n]+') do
    if k == key then return true end
  end
  return false
end
