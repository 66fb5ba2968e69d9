-- claim.lua (include): leasing up to `want` waiting jobs to a worker, shared by claim.lua (a claim on its
-- own) and add_jobs.lua (a claim folded into the add it follows). Needs common.lua included first.
--
-- claim_jobs promotes due delayed jobs, then applies the queue's pause flag, a worker's retry-after hold,
-- the concurrency cap and the token-bucket rate limit, and leases what is left to lease under one token.
-- The queue's meta hash must exist; cfg holds its fields paused, rl_max, rl_ms, conc, created, gturn, evw
-- and rl_burst as the caller read them (in a read it makes anyway): a watched queue's claim records its job events
-- (common.lua watched), which the caller publishes at its end (publish_events). fresh (or nil): jobs the caller inserted in this script call, id →
-- {the fields insert_job wrote but the data, as name/value pairs; the data} (add.lua), which a claim that
-- takes them need not read back. labels: the claiming worker's labels (name -> value), nil for a worker
-- without (it takes no routed job: route_ok below). Returns the reply claim.lua documents (its code, now,
-- next delayed run-at, retry-after, bucket fill, hand-offs, routing entries passed over, then each job's
-- record), and whether it left the queue with no ready job for this worker (it took fewer than it wanted).
--
-- A job whose expiry ('exp', includes/add.lua) has passed is not leased: it ends cancelled (expire_job) and
-- the claim takes the next one in its place.

-- The job fields a claim reads for a job that is not plain (common.lua PLAIN; the last is that mark), in the
-- order the reply below takes them by place, and their places by name (filled at the first fresh_read of a
-- script call).
local CLAIM_FIELDS = {'name', 'data', 'ct', 'pri', 'att', 'atm', 'stc', 'ts', 'md', 'to', 'par', 'wt', 'p',
  'exp', 'grp'}
local CLAIM_AT = false
-- The places in CLAIM_FIELDS of the fields a claim's record carries only when the job has them stored, each
-- after its place as its code (claim.lua's reply; engine.py _claimed reads them by these codes).
local RECORD_CODES = {3, 4, 5, 6, 7, 9, 10, 11, 15}

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

-- Most expired jobs one claim ends (each costs a few commands): a queue full of them is worked through by
-- the claims that follow, woken by the 'w' event the one that stopped publishes (scripts stay O(batch)).
local EXPIRE_CHUNK = 1000

-- A duration in ms as people write it: '5m', '90s', '1h30m', '250ms'.
local function span_text(ms)
  local out = ''
  for _, u in ipairs({{86400000, 'd'}, {3600000, 'h'}, {60000, 'm'}, {1000, 's'}, {1, 'ms'}}) do
    if ms >= u[1] then
      out = out .. string.format('%d', math.floor(ms / u[1])) .. u[2]
      ms = ms % u[1]
    end
  end
  return out == '' and '0ms' or out
end

-- A time in ms since the epoch as UTC ISO 8601 (the scripts have no os.date): days to a civil date as in
-- Howard Hinnant's days_from_civil inverse.
local function utc_text(ms)
  local s = math.floor(ms / 1000)
  local z = math.floor(s / 86400) + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400 + (month <= 2 and 1 or 0)
  local t = s % 86400
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', year, month, day, math.floor(t / 3600),
    math.floor(t / 60) % 60, t % 60, ms % 1000)
end

-- Ends a job a claim took out of waiting whose expiry has passed: cancelled (common.lua finish_cancelled:
-- its dedup key released, its flow's hand-off queued as for any cancelled job), with the reason, no attempt
-- used. exp: its 'exp' field. Returns 1 when a flow hand-off was queued (common.lua on_finished).
local function expire_job(meta, prefix, id, jkey, exp, now)
  local exa = tonumber(redis.call('HGET', jkey, 'exa')) or 0
  redis.call('HSET', jkey, 'cxm',
    'expired: not started within ' .. span_text(exa) .. ' of being ready (at ' .. utc_text(exp) .. ')')
  return finish_cancelled(meta, prefix, id, now, 12)
end

-- The groups' claim (pop_levels, groups_taken below), built at the first claim of a script call that needs it:
-- helpers defined at the top are closures every call builds again, and only queues whose jobs have groups
-- use these (common.lua groups_lib says the same of the groups' bookkeeping).
local GROUP_CLAIM = false
local function group_claims()
  if GROUP_CLAIM then return GROUP_CLAIM end
  -- A group's limits: its own ('glimits': "concurrency rate-max rate-ms max-size burst"; limits set before
  -- burst have 4 fields, before max-size 3), else the queue's (d: meta g_conc, g_rl_max, g_rl_ms, g_paused,
  -- g_rl_burst). Returns concurrency, rate max, rate ms (0: none), burst (0: the default).
  local function group_limits(own, d)
    if own then
      local c, m, w = string.match(own, '^(%d+) (%d+) (%d+)')
      local b = string.match(own, '^%d+ %d+ %d+ %d+ (%d+)')
      return tonumber(c), tonumber(m), tonumber(w), tonumber(b) or 0
    end
    return tonumber(d[1]) or 0, tonumber(d[2]) or 0, tonumber(d[3]) or 0, tonumber(d[5]) or 0
  end

  -- Hard routing (JobOptions.worker_labels): a routing group, 'labels:' and its pairs in key order
  -- ("labels:gpu=a100,region=eu": validate.py worker_labels, whose keys hold no '=' or ',' and values no
  -- ','), goes only to a worker whose labels hold every pair. g: the claim's record (pop_groups), with the
  -- worker's labels (nil: none) and each routing group's answer once found.
  local function route_ok(grp, g)
    if string.sub(grp, 1, 7) ~= 'labels:' then return true end
    local ok = g.route[grp]
    if ok == nil then
      ok = g.labels ~= nil
      if ok then
        for key, value in string.gmatch(string.sub(grp, 8) .. ',', '([^=,]*)=([^,]*),') do
          if g.labels[key] ~= value then ok = false; break end
        end
      end
      g.route[grp] = ok
    end
    return ok
  end

  -- The level of the rotation's first entry (LEVELS + 1: the rotation is empty).
  local function ring_level(ring)
    local first = redis.call('ZRANGE', ring, 0, 0, 'WITHSCORES')
    if #first == 0 then return LEVELS + 1 end
    return math.floor(tonumber(first[2]) / GROUP_SPAN)
  end

  -- Pops the rotation's next `rem` entries of level p, as {entry, score, ...}, and whether they were all of
  -- the level's (fewer than asked for, or up to a later level's). Entries of a later level go back with their
  -- turns: the claim comes to them at their level. Those of routing groups the worker does not match
  -- (route_ok) are held aside in g.held with their scores until the claim ends (unhold): the claim meets
  -- each once, and they keep their place in the rotation for a worker that matches.
  local function pop_turns(ring, rem, p, g)
    local parts = redis.call('ZPOPMIN', ring, rem)
    local later = false
    for i = 1, #parts, 2 do
      if tonumber(string.sub(parts[i], 1, 1)) > p then
        local back = {}
        for j = i, #parts, 2 do back[#back + 1] = parts[j + 1]; back[#back + 1] = parts[j] end
        redis.call('ZADD', ring, unpack(back))
        for j = #parts, i, -1 do parts[j] = nil end
        later = true
        break
      end
    end
    local all, np = #parts / 2, 0
    for i = 1, #parts, 2 do
      if route_ok(string.sub(parts[i], 3), g) then
        parts[np * 2 + 1], parts[np * 2 + 2] = parts[i], parts[i + 1]
        np = np + 1
      else
        g.held[#g.held + 1] = parts[i + 1]; g.held[#g.held + 1] = parts[i]
      end
    end
    for j = #parts, np * 2 + 1, -1 do parts[j] = nil end
    return parts, all < rem or later
  end

  -- Takes jobs of the fairness groups (common.lua) of priority level p until ids holds `want`, in turns: the
  -- rotation's first entries, one job each, each taken entry going to the back of its level. When a turn takes
  -- all of the level's entries, each group gets an equal share at once (one group with many jobs costs a
  -- round, not one per job). A group at its concurrency limit leaves the rotation (marked in 'gpark' until a
  -- run of it ends: common.lua run_ended); one out of tokens waits in 'gdelay' until its next token. g: the
  -- claim's record of the groups it met (their active counts with this claim's, limits and buckets), shared by
  -- its pops (pop_turns holds aside the entries of routing groups the worker does not match). Appends to ids
  -- the jobs taken, to lv their levels and to gs their groups. Returns the level of the rotation's first
  -- entry after.
  local function pop_groups(base, waiting, want, now, g, ids, lv, gs, p)
    local ring, gdelay = base .. 'gring', base .. 'gdelay'
    while #ids < want do
      local rem = want - #ids
      -- A pop that found only routing groups' entries the worker does not match pops again.
      local parts, level_done
      repeat parts, level_done = pop_turns(ring, rem, p, g) until #parts > 0 or level_done
      local np = #parts / 2
      if np == 0 then break end
      -- What the claim does not know yet of these groups: one read each of counts, limits and buckets.
      local new = {}
      for i = 1, #parts, 2 do
        local grp = string.sub(parts[i], 3)
        if not g.of[grp] and not new[grp] then new[#new + 1] = grp; new[grp] = true end
      end
      if #new > 0 then
        local a = redis.call('HMGET', base .. 'gact', unpack(new))
        local l = redis.call('HMGET', base .. 'glimits', unpack(new))
        local t = redis.call('HMGET', base .. 'gtok', unpack(new))
        -- Paused groups (read only while the queue has any: meta 'g_paused').
        local paused = (tonumber(g.defaults[4]) or 0) > 0 and redis.call('HMGET', base .. 'gpaused', unpack(new))
        for i, grp in ipairs(new) do
          local conc, rl, rms, rb = group_limits(l[i], g.defaults)
          local act = tonumber(a[i]) or 0
          local st = {act = act, act0 = act, conc = conc, rl = rl, rms = rms, took = 0,
            paused = paused and paused[i] == '1'}
          if rl > 0 and rms > 0 then
            local burst = bucket_size(rl, rb)
            local tk, ts = string.match(t[i] or '', '^(%S+) (%S+)$')
            local tokens, last = tonumber(tk) or burst, tonumber(ts) or now
            if now > last then tokens = math.min(burst, tokens + (now - last) * rl / rms) end
            st.tokens = tokens
          end
          g.of[grp] = st
        end
      end
      -- All of the level's entries taken: share out what is left.
      local share = 1
      if level_done then share = math.max(1, math.floor(rem / np)) end
      local back, took = {}, #ids
      for i = 1, #parts, 2 do
        local part = parts[i]
        local level, grp = tonumber(string.sub(part, 1, 1)), string.sub(part, 3)
        local st = g.of[grp]
        local room = math.min(share, want - #ids)
        if st.paused then
          room = 0  -- it leaves the rotation; resuming the group puts it back (set_group_paused.lua)
        elseif st.conc > 0 and st.act >= st.conc then
          redis.call('HSET', base .. 'gpark', grp, '1')
          room = 0
        elseif st.conc > 0 then
          room = math.min(room, st.conc - st.act)
        end
        if room > 0 and st.tokens then
          if st.tokens < 1 then
            redis.call('ZADD', gdelay, now + math.ceil((1 - st.tokens) * st.rms / st.rl), part)
            room = 0
          else
            room = math.min(room, math.floor(st.tokens))
          end
        end
        if room > 0 then
          local got = redis.call('LPOP', level_key(waiting, level, grp), room)
          if got then
            for j = 1, #got do
              local n = #ids + 1
              ids[n], lv[n], gs[n] = got[j], level, grp
            end
            st.act, st.took = st.act + #got, st.took + #got
            g.levels[level] = (g.levels[level] or 0) + #got
            if st.tokens then st.tokens = st.tokens - #got end
            -- A list that gave all it was asked for may have more: its next turn is at the back.
            if #got == room then back[#back + 1] = part end
          end
          -- No job: the list emptied since it joined (a remove, a clean): it leaves the rotation.
        end
      end
      if #back > 0 then
        local t = groups_lib().turns(base, #back)
        local args = {}
        for i, part in ipairs(back) do
          args[#args + 1] = tonumber(string.sub(part, 1, 1)) * GROUP_SPAN + t + i - 1
          args[#args + 1] = part
        end
        redis.call('ZADD', ring, unpack(args))
      end
      -- Nothing taken and the level's entries all popped: nothing more to take at this level.
      if #ids == took and level_done then break end
    end
    return ring_level(ring)
  end

  -- Puts back the rotation's entries the claim held aside (pop_groups), with their scores. Returns how many.
  local function unhold(base, g)
    local held = g.held
    for i = 1, #held, 1000 do
      redis.call('ZADD', base .. 'gring', unpack(held, i, math.min(i + 999, #held)))
    end
    return #held / 2
  end

  -- Takes up to `want` waiting ids of a queue whose jobs have groups, level by level: the jobs without a group
  -- first, then the groups' in turns (pop_groups). Returns the ids, their levels and their groups (false for
  -- none).
  local function pop_levels(base, waiting, want, now, g)
    local ids, lv, gs = {}, {}, {}
    local ring = base .. 'gring'
    if not g.defaults then
      -- Once per claim: the queue's group limits, and the groups whose next token is due take their turns
      -- again.
      g.defaults = redis.call('HMGET', base .. 'meta', 'g_conc', 'g_rl_max', 'g_rl_ms', 'g_paused', 'g_rl_burst')
      local gdelay = base .. 'gdelay'
      local due = redis.call('ZRANGEBYSCORE', gdelay, '-inf', now, 'LIMIT', 0, 1000)
      if #due > 0 then
        local t = groups_lib().turns(base, #due)
        for i, part in ipairs(due) do
          redis.call('ZADD', ring, 'NX', tonumber(string.sub(part, 1, 1)) * GROUP_SPAN + t + i - 1, part)
        end
        redis.call('ZREM', gdelay, unpack(due))
      end
    end
    local glevel = ring_level(ring)
    for p = 1, LEVELS do
      if #ids >= want then break end
      local got = redis.call('LPOP', waiting .. ':' .. p, want - #ids)
      if got then
        for j = 1, #got do
          local n = #ids + 1
          ids[n], lv[n], gs[n] = got[j], p, false
        end
      end
      if #ids < want and glevel <= p then
        glevel = pop_groups(base, waiting, want, now, g, ids, lv, gs, p)
      end
    end
    return ids, lv, gs
  end

  -- Records what a claim took from the groups (pop_groups' g): their waiting and active counts and their
  -- buckets, a command or two each for all the groups (their active counts as read, plus the jobs leased:
  -- those found expired took no slot). leased: group -> jobs of it leased.
  local function groups_taken(base, g, leased, now)
    local names = {}
    for grp, st in pairs(g.of) do
      if st.took > 0 then names[#names + 1] = grp end
    end
    if #names == 0 then return end
    local w = redis.call('HMGET', base .. 'gwaiting', unpack(names))
    local act, wait, tok, none = {}, {}, {}, {}
    local total = 0
    for i, grp in ipairs(names) do
      local st = g.of[grp]
      local n = leased[grp] or 0
      if n > 0 then act[#act + 1] = grp; act[#act + 1] = st.act0 + n end
      if st.tokens then tok[#tok + 1] = grp; tok[#tok + 1] = tostring(st.tokens) .. ' ' .. now end
      local left = (tonumber(w[i]) or 0) - st.took
      if left > 0 then wait[#wait + 1] = grp; wait[#wait + 1] = left else none[#none + 1] = grp end
      total = total + st.took
    end
    if #act > 0 then redis.call('HSET', base .. 'gact', unpack(act)) end
    if #tok > 0 then redis.call('HSET', base .. 'gtok', unpack(tok)) end
    if #wait > 0 then redis.call('HSET', base .. 'gwaiting', unpack(wait)) end
    if #none > 0 then
      redis.call('HDEL', base .. 'gwaiting', unpack(none))
      for _, grp in ipairs(none) do groups_lib().idle(base, grp) end
    end
    redis.call('HINCRBY', base .. 'meta', 'gw', -total)
    for p = 1, LEVELS do
      if g.levels[p] then redis.call('HINCRBY', base .. 'meta', 'gw' .. p, -g.levels[p]) end
    end
  end

  GROUP_CLAIM = {pop_levels = pop_levels, taken = groups_taken, unhold = unhold}
  return GROUP_CLAIM
end

local function claim_jobs(meta, waiting, delayed, active, limiter, prefix, want, token, wid, lease,
    promote_max, now, cfg, fresh, labels)
  watched(cfg[7], now)
  local _, next_due = promote_due(delayed, waiting, prefix, now, promote_max)

  if cfg[1] == '1' then return {1, now, next_due, 0, 0, 0, 0}, false end

  -- A worker was told to slow down (retry-after): no job of the queue starts before 'hold', limit or not.
  local b = redis.call('HMGET', limiter, 'hold', 'tokens', 'ts')
  local hold = tonumber(b[1]) or 0
  if hold > now then return {2, now, next_due, hold - now, 0, 0, 0}, false end

  -- Concurrency cap: at most conc jobs active at once, across every worker and server.
  local conc = tonumber(cfg[4]) or 0
  if conc > 0 then
    local free = conc - redis.call('ZCARD', active)
    if free <= 0 then return {3, now, next_due, 0, 0, 0, 0}, false end
    if want > free then want = free end
  end

  -- Token bucket: refilled continuously at rl_max per rl_ms, holding at most `burst` tokens (RateLimit.burst,
  -- by default a tenth of rl_max, at least 1: bucket_size). So any window of rl_ms sees at most rl_max + burst
  -- starts (docs/control.md), while one claim may still take a batch of up to `burst` jobs and a claim that
  -- comes back a little late finds the tokens that accrued meanwhile (the sustained rate stays at the limit).
  local rl_max, rl_ms = tonumber(cfg[2]) or 0, tonumber(cfg[3]) or 0
  local tokens, fill = 0, 0
  if rl_max > 0 and rl_ms > 0 then
    local burst = bucket_size(rl_max, cfg[8])
    fill = math.ceil(burst * rl_ms / rl_max)
    tokens = tonumber(b[2]) or burst
    local last = tonumber(b[3]) or now
    if now > last then tokens = math.min(burst, tokens + (now - last) * rl_max / rl_ms) end
    if tokens < 1 then
      redis.call('HSET', limiter, 'tokens', tostring(tokens), 'ts', now)
      return {2, now, next_due, math.ceil((1 - tokens) * rl_ms / rl_max), fill, 0, 0}, false
    end
    if want > math.floor(tokens) then want = math.floor(tokens) end
  end

  local out = {0, now, next_due, 0, fill, 0, 0}
  local expiry = now + lease
  -- 'wid' holds the worker id and the run's start (ms) in one field: a job hash entry less to write, and for
  -- every later command on the job to step over (~0.25 µs per claimed and completed job; engine/records.py).
  local started = wid .. ' ' .. now
  local deadlines = queue_key(prefix, 'deadlines')
  local ids = {}
  local n = #out
  local whole = false
  local short, expired = false, 0
  -- The fairness groups (common.lua), once the queue's jobs had any: what the claim met of them, the levels
  -- and groups of the jobs it took from them, and those leased per group.
  local grouped = cfg[6] or GROUPED
  local gm = grouped and {of = {}, levels = {}, labels = labels, route = {}, held = {}}
  local leased_of = grouped and {}
  local base = string.sub(waiting, 1, -8)
  -- Per job one read (none for a job this script call inserted) and one write; the active set gets the whole
  -- batch in one command. The lease expiry lives in the active set's score only (the job hash has no copy to
  -- rewrite on every extension). The reply is filled by index (table.insert costs a global lookup and a call
  -- per field, a third of this loop). Jobs found expired are replaced by a further pop, EXPIRE_CHUNK at most.
  repeat
    local ask = want - #ids
    -- A queue whose jobs had groups takes them level by level, those without a group first in each
    -- (pop_levels); any other the heads of its levels.
    local popped, ends, lvs, grps
    if grouped then
      popped, lvs, grps = group_claims().pop_levels(base, waiting, ask, now, gm)
    else
      popped, ends = pop_waiting(waiting, ask)
    end
    short = #popped < ask
    local level, gone = 1, 0
    for i = 1, #popped do
      local id = popped[i]
      local jkey = prefix .. id
      local known = fresh and fresh[id]
      if lvs then level = lvs[i] else while i > ends[level] do level = level + 1 end end
      local f
      if known then
        f = fresh_read(known)
      else
        -- A plain job (common.lua PLAIN) has its name, data, time and max attempts and the priority of its
        -- level: 5 fields; one of a group (GROUP_PLAIN) its group too, from its mark. Any other is read
        -- again whole, and since a batch's jobs are mostly alike, so is the next (its mark says when to go
        -- back).
        local g = not whole and redis.call('HMGET', jkey, 'name', 'data', 'ts', 'att', 'p')
        local grp = g and plain_group(g[5])
        if g and (g[5] == PLAIN or grp) then
          f = {g[1], g[2], false, level ~= DEFAULT_PRI and level, g[4], false, false, g[3], false, false,
            false, false, false, false, grp or false}
        else
          f = redis.call('HMGET', jkey, unpack(CLAIM_FIELDS))
          whole = f[13] ~= PLAIN
        end
      end
      local exp = f[14] and tonumber(f[14])
      if exp and now >= exp then
        out[6] = out[6] + expire_job(meta, prefix, id, jkey, exp, now)
        gone = gone + 1
      else
        redis.call('HSET', jkey, 'st', 'active', 'tok', token, 'wid', started)
        local grp = grps and grps[i]
        if grp then leased_of[grp] = (leased_of[grp] or 0) + 1 end
        if f[12] then notify_job(prefix, id, jkey, 'active', f[12]) end
        -- Attempts started: those made, the stalls and this one.
        if EVENTS then
          job_event(prefix, id, 3, f[1] or '', (tonumber(f[6]) or 0) + (tonumber(f[7]) or 0) + 1)
        end
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
    end
    expired = expired + gone
  until gone == 0 or short or expired >= EXPIRE_CHUNK
  if grouped then
    out[7] = group_claims().unhold(base, gm)
    group_claims().taken(base, gm, leased_of, now)
    -- Fewer taken than wanted while groups wait for tokens: come back when the first is due.
    if short then
      local first = redis.call('ZRANGE', base .. 'gdelay', 0, 0, 'WITHSCORES')
      if #first > 0 then out[4] = math.max(1, tonumber(first[2]) - now) end
    end
  end
  if expired > 0 then
    redis.call('HINCRBY', meta, 'expired_total', expired)
    -- Stopped at EXPIRE_CHUNK with jobs left and fewer taken than wanted: wake the claims to come back.
    if not short and #ids < want then
      local base, queue = string.match(prefix, '^(.*):{(.*)}:job:$')
      redis.call('PUBLISH', base .. ':events', 'w ' .. queue)
    end
  end
  -- Left with no ready job: the next job made ready publishes 'w' (common.lua publish_ready), which wakes
  -- this caller; until then adds publish nothing. HSETNX: a mark already there is not written again (an idle
  -- queue's re-checks add nothing to the append-only file or the replicas).
  if short then redis.call('HSETNX', meta, 'hungry', '1') end
  zadd_all(active, expiry, ids)
  local taken = #ids
  if rl_max > 0 and rl_ms > 0 then
    tokens = tokens - taken
    redis.call('HSET', limiter, 'tokens', tostring(tokens), 'ts', now)
    -- An expired bucket reads full: it must outlive its refill (a burst above rl_max refills over windows).
    redis.call('PEXPIRE', limiter, math.max(rl_ms * 2, fill))
    -- Jobs left behind by the limit: say when the next token arrives so the caller comes back then.
    if tokens < 1 and waiting_count(waiting) > 0 then
      out[4] = math.ceil((1 - tokens) * rl_ms / rl_max)
    end
  end
  return out, short
end
