-- claim.lua (include): leasing up to `want` waiting jobs to a worker, shared by claim.lua (a claim on its
-- own) and add_jobs.lua (a claim folded into the add it follows). Needs common.lua included first.
--
-- claim_jobs promotes due delayed jobs, then applies the queue's pause flag, a worker's retry-after hold,
-- the concurrency cap and the token-bucket rate limit, and leases what is left to lease under one token.
-- The queue's meta hash must exist; cfg holds its fields paused, rl_max, rl_ms and conc as the caller read
-- them (in a read it makes anyway). fresh (or nil): jobs the caller inserted in this script call, id →
-- {the fields insert_job wrote but the data, as name/value pairs; the data} (add.lua), which a claim that
-- takes them need not read back. Returns the reply claim.lua documents (its code, now, next delayed run-at,
-- retry-after, bucket fill, then each job's record), and whether it left the queue with no ready job (it
-- took fewer than it wanted).

-- The job fields a claim reads for a job that is not plain (common.lua PLAIN; the last is that mark), in the
-- order the reply below takes them by place, and their places by name (filled at the first fresh_read of a
-- script call).
local CLAIM_FIELDS = {'name', 'data', 'ct', 'pri', 'att', 'atm', 'stc', 'ts', 'md', 'to', 'par', 'wt', 'p'}
local CLAIM_AT = false
-- The places in CLAIM_FIELDS of the fields a claim's record carries only when the job has them stored, each
-- after its place as its code (claim.lua's reply; engine.py _claimed reads them by these codes).
local RECORD_CODES = {3, 4, 5, 6, 7, 9, 10, 11}

-- The claim's read of a job inserted in this script call, from what its insert wrote: the same values the
-- HMGET would find (numbers as numbers, which the reply carries as integers), false where it wrote nothing.
local function fresh_read(known)
  if not CLAIM_AT then
    CLAIM_AT = {}
    for i, name in ipairs(CLAIM_FIELDS) do CLAIM_AT[name] = i end
  end
  local f = {}
  for i = 1, #CLAIM_FIELDS do f[i] = false end
  f[CLAIM_AT.data] = known[2]
  local written = known[1]
  for i = 1, #written, 2 do
    local at = CLAIM_AT[written[i]]
    if at then f[at] = written[i + 1] end
  end
  return f
end

local function claim_jobs(meta, waiting, delayed, active, limiter, prefix, want, token, wid, lease,
    promote_max, now, cfg, fresh)
  local _, next_due = promote_due(delayed, waiting, prefix, now, promote_max)

  if cfg[1] == '1' then return {1, now, next_due, 0, 0}, false end

  -- A worker was told to slow down (retry-after): no job of the queue starts before 'hold', limit or not.
  local b = redis.call('HMGET', limiter, 'hold', 'tokens', 'ts')
  local hold = tonumber(b[1]) or 0
  if hold > now then return {2, now, next_due, hold - now, 0}, false end

  -- Concurrency cap: at most conc jobs active at once, across every worker and server.
  local conc = tonumber(cfg[4]) or 0
  if conc > 0 then
    local free = conc - redis.call('ZCARD', active)
    if free <= 0 then return {3, now, next_due, 0, 0}, false end
    if want > free then want = free end
  end

  -- Token bucket: refilled continuously at rl_max per rl_ms, holding at most `burst` tokens (a tenth of
  -- rl_max, at least 1). So any window of rl_ms sees at most rl_max + burst starts (docs/control.md), while
  -- one claim may still take a batch of up to `burst` jobs and a claim that comes back a little late finds
  -- the tokens that accrued meanwhile (the sustained rate stays at the limit).
  local rl_max, rl_ms = tonumber(cfg[2]) or 0, tonumber(cfg[3]) or 0
  local tokens, fill = 0, 0
  if rl_max > 0 and rl_ms > 0 then
    local burst = math.max(1, math.ceil(rl_max / 10))
    fill = math.ceil(burst * rl_ms / rl_max)
    tokens = tonumber(b[2]) or burst
    local last = tonumber(b[3]) or now
    if now > last then tokens = math.min(burst, tokens + (now - last) * rl_max / rl_ms) end
    if tokens < 1 then
      redis.call('HSET', limiter, 'tokens', tostring(tokens), 'ts', now)
      return {2, now, next_due, math.ceil((1 - tokens) * rl_ms / rl_max), fill}, false
    end
    if want > math.floor(tokens) then want = math.floor(tokens) end
  end

  local popped, ends = pop_waiting(waiting, want)
  -- Left with no ready job: the next job made ready publishes 'w' (common.lua publish_ready), which wakes
  -- this caller; until then adds publish nothing. HSETNX: a mark already there is not written again (an idle
  -- queue's re-checks add nothing to the append-only file or the replicas).
  if #popped < want then redis.call('HSETNX', meta, 'hungry', '1') end
  local out = {0, now, next_due, 0, fill}
  local expiry = now + lease
  -- 'wid' holds the worker id and the run's start (ms) in one field: a job hash entry less to write, and for
  -- every later command on the job to step over (~0.25 µs per claimed and completed job; engine/records.py).
  local started = wid .. ' ' .. now
  local deadlines = queue_key(prefix, 'deadlines')
  local ids = {}
  local n = #out
  local level, whole = 1, false
  -- Per job one read (none for a job this script call inserted) and one write; the active set gets the whole
  -- batch in one command. The lease expiry lives in the active set's score only (the job hash has no copy to
  -- rewrite on every extension). The reply is filled by index (table.insert costs a global lookup and a call
  -- per field, a third of this loop).
  for i = 1, #popped do
    local id = popped[i]
    local jkey = prefix .. id
    local known = fresh and fresh[id]
    while i > ends[level] do level = level + 1 end
    local f
    if known then
      f = fresh_read(known)
    else
      -- A plain job (common.lua PLAIN) has its name, data, time and max attempts and the priority of its
      -- level: 5 fields. Any other is read again whole, and since a batch's jobs are mostly alike, so is the
      -- next (its mark says when to go back).
      local g = not whole and redis.call('HMGET', jkey, 'name', 'data', 'ts', 'att', 'p')
      if g and g[5] == PLAIN then
        f = {g[1], g[2], false, level ~= DEFAULT_PRI and level, g[4], false, false, g[3], false, false, false,
          false}
      else
        f = redis.call('HMGET', jkey, unpack(CLAIM_FIELDS))
        whole = f[13] ~= PLAIN
      end
    end
    redis.call('HSET', jkey, 'st', 'active', 'tok', token, 'wid', started)
    if f[12] then notify_job(prefix, id, jkey, 'active', f[12]) end
    local timeout = tonumber(f[10]) or 0
    if timeout > 0 then redis.call('ZADD', deadlines, now + timeout, id) end
    ids[#ids + 1] = id
    -- Fields are stored only when not the default (includes/add.lua), and the record carries the stored
    -- ones only, each after its code (RECORD_CODES); attempts started are not stored at all (every start
    -- ends as a finished run or a stall: the server counts this one as the next after those).
    local at = n + 1
    out[at + 1], out[at + 2], out[at + 3], out[at + 4] = id, f[1] or '', f[2] or '', f[8] or 0
    n = at + 4
    for c = 1, #RECORD_CODES do
      local code = RECORD_CODES[c]
      local v = f[code]
      if v then
        out[n + 1], out[n + 2] = code, v
        n = n + 2
      end
    end
    out[at] = n - at
  end
  zadd_all(active, expiry, ids)
  local taken = #ids
  if rl_max > 0 and rl_ms > 0 then
    tokens = tokens - taken
    redis.call('HSET', limiter, 'tokens', tostring(tokens), 'ts', now)
    redis.call('PEXPIRE', limiter, rl_ms * 2)
    -- Jobs left behind by the limit: say when the next token arrives so the caller comes back then.
    if tokens < 1 and waiting_count(waiting) > 0 then
      out[4] = math.ceil((1 - tokens) * rl_ms / rl_max)
    end
  end
  return out, #popped < want
end
