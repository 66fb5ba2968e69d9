-- add.lua: inserting one job, shared by add_jobs.lua (jobs in ARGV) and publish_staged.lua (jobs held
-- in a staged bulk stream). Needs common.lua (level_key, DEFAULT_PRI, DEFAULT_ATT) included first.
--
-- A job travels as 4 strings: header, data, metadata (encoded JobMetadata or ""), extra fields. The header
-- is 19 fields, each followed by a NUL byte: id, name, content type, priority (0 = queue default), delay ms
-- (-1 = none), run-at ms (-1 = none), attempts (0 = default), backoff type (0 = default, 1 fixed,
-- 2 exponential), backoff delay ms, backoff jitter, backoff max ms, keep-completed policy, keep-failed
-- policy, timeout ms, max stalled (0 = default), unused (older servers wrote a FIFO seq there: a job's
-- place is now in its waiting list), dedup key ("" = none), dedup ttl ms (0 = the key is held until the job
-- finishes), expire after ms (0 = the queue's default), fairness group ("" = none), LIFO ("1"; "0" or
-- absent = FIFO), dedup mode (Dedup.mode's number: "0" or absent and "1" keep the first, "2" extend, "3"
-- replace: dedup_held).
-- A job whose content type and options are all the defaults has a header of 2 fields: id and name (missing
-- fields read as their defaults). Headers staged by an older server have 16 fields (no dedup), 18 (no
-- expiry), 19 (no group), 20 (no LIFO) or 21 (no dedup mode). Extra fields
-- are more job-hash fields, set by flows (chain links, workflow steps): netstrings ("<length>:<bytes>")
-- alternating field name and value, binary-safe; "" for none.

-- The queue's default job options (1-10, and 16: expire after ms), its paused flag (11), its 'created' time
-- (12: absent, the queue is not registered) and what a claim checks (13-15: rl_max, rl_ms, conc; 17: gturn,
-- present once the queue's jobs had fairness groups: common.lua) and the size limits (18: max_size, 19:
-- g_max, 20: g_max_own, set once a group had a max_size of its own: size_limits), its job events' watch
-- deadline (21: evw, common.lua watched) and the rate limit's burst (22: rl_burst, for a claim), read once
-- per script call (fields of the meta hash): one read where an EXISTS, this and a folded claim's settings
-- read were three commands.
local function add_defaults(meta)
  return redis.call('HMGET', meta, 'd_pri', 'd_att', 'd_bt', 'd_bd', 'd_bj', 'd_bm', 'd_to', 'd_kc', 'd_kf',
    'd_md', 'paused', 'created', 'rl_max', 'rl_ms', 'conc', 'd_exa', 'gturn', 'max_size', 'g_max', 'g_max_own',
    'evw', 'rl_burst')
end

-- Whether the queue's default job options (add_defaults' d) are the defaults: priority, attempts, backoff,
-- timeout, retention, metadata and expiry as a job without options has them. Worked out once per script
-- call (kept in d).
local function plain_defaults(d)
  local plain = d.plain
  if plain == nil then
    plain = (tonumber(d[1]) or DEFAULT_PRI) == DEFAULT_PRI and (tonumber(d[2]) or DEFAULT_ATT) == DEFAULT_ATT
      and (d[3] or '0') == '0' and (d[7] or '0') == '0' and (d[8] or '') == '' and (d[9] or '') == ''
      and (d[10] or '') == '' and (d[16] or '0') == '0'
    d.plain = plain
  end
  return plain
end

-- The fields of a NUL-terminated header.
local function split_header(s)
  local h = {}
  for v in string.gmatch(s, '([^%z]*)%z') do h[#h + 1] = v end
  return h
end

-- The strings of a netstring list ("<length>:<bytes>" each).
local function netstrings(s)
  local out, i = {}, 1
  while i <= #s do
    local c = string.find(s, ':', i, true)
    local n = tonumber(string.sub(s, i, c - 1))
    out[#out + 1] = string.sub(s, c + 1, c + n)
    i = c + n + 1
  end
  return out
end

-- A call's record of the size limits from add_defaults' d (nil when the queue has none: then no more is
-- built, the helpers below being closures a call pays for only when it needs them): the queue's max_size
-- (jobs waiting, paused or delayed) and its groups' (a group's jobs waiting; a group's own limits replace the
-- queue's group limits, max_size among them). lim.room(waiting, delayed, grp): nil when there is room for one
-- more job of group grp ('' for none), else 'q' (the queue is full) or 'g' (its group is). lim.took(grp,
-- waiting_now): a job was added under them (one more pending; one more of its group waiting).
-- lim.fits(waiting, delayed, n, counts): whether n more jobs fit whole (counts: group -> its jobs among them,
-- every one counted, delayed too): nil, else 'q' or 'g', the group ('' for the queue), the jobs it holds, its
-- max_size and the jobs of the add against it (a bulk add's check; the figures go into the refusal's message).
local function size_limits(d)
  local cap, gcap, gown = tonumber(d[18]) or 0, tonumber(d[19]) or 0, d[20] == '1'
  if cap == 0 and gcap == 0 and not gown then return nil end
  local lim = {cap = cap, gcap = gcap, gown = gown, groups = {}}
  local grouped = gcap > 0 or gown
  -- A group's max size (its own, else the queue's) and its jobs waiting, read once per call.
  local function group(waiting, grp)
    local g = lim.groups[grp]
    if not g then
      local base = string.sub(waiting, 1, -8)
      local gmax = gcap
      if gown then
        local own = redis.call('HGET', base .. 'glimits', grp)
        if own then gmax = tonumber(string.match(own, '^%d+ %d+ %d+ (%d+)')) or 0 end
      end
      g = {cap = gmax, n = tonumber(redis.call('HGET', base .. 'gwaiting', grp)) or 0}
      lim.groups[grp] = g
    end
    return g
  end
  local function pending(waiting, delayed)
    if not lim.pending then lim.pending = waiting_count(waiting) + redis.call('ZCARD', delayed) end
    return lim.pending
  end
  function lim.room(waiting, delayed, grp)
    if cap > 0 and pending(waiting, delayed) >= cap then return 'q' end
    if grp ~= '' and grouped then
      local g = group(waiting, grp)
      if g.cap > 0 and g.n >= g.cap then return 'g' end
    end
  end
  function lim.fits(waiting, delayed, n, counts)
    if cap > 0 and pending(waiting, delayed) + n > cap then return 'q', '', lim.pending, cap, n end
    if grouped then
      for grp, m in pairs(counts) do
        local g = group(waiting, grp)
        if g.cap > 0 and g.n + m > g.cap then return 'g', grp, g.n, g.cap, m end
      end
    end
  end
  function lim.took(grp, waiting_now)
    if lim.pending then lim.pending = lim.pending + 1 end
    local g = grp ~= '' and lim.groups[grp]
    if g and waiting_now then g.n = g.n + 1 end
  end
  return lim
end

-- Appends a field and its value to a HSET argument list.
local function put(f, name, value)
  f[#f + 1] = name; f[#f + 1] = value
end

-- The limits a job's own metadata is held to (validate.py MAX_TAGS, MAX_ATTRIBUTES, MAX_METADATA_BYTES),
-- which the queue's default metadata merged under it must not push it past either.
local MD_MAX_TAGS, MD_MAX_ATTRIBUTES, MD_MAX_BYTES = 100, 100, 16384
-- Metadata of fewer bytes, the job's and the default's together, cannot break a limit: a tag takes 2 bytes
-- at least, an attribute 5; so it is merged without being read.
local MD_SMALL = 200

-- The fields of an encoded JobMetadata, each {field number, first byte, last byte, and for an attribute
-- (field 3, a map entry) its key}; nil when the bytes are not a message this can read.
local function md_fields(s)
  local out, i = {}, 1
  while i <= #s do
    local first, tag = i, nil
    tag, i = pb_varint(s, i)
    if tag == nil then return nil end
    local wire, len = tag % 8, 0
    if wire == 0 then
      len, i = pb_varint(s, i)
      if len == nil then return nil end
      len = 0
    elseif wire == 1 then
      len = 8
    elseif wire == 5 then
      len = 4
    elseif wire == 2 then
      len, i = pb_varint(s, i)
      if len == nil then return nil end
    else
      return nil
    end
    local last = i + len - 1
    if last > #s then return nil end
    local key = nil
    if tag == 26 then  -- an attribute: its entry's field 1 (tag 10) is the key
      local j = i
      while j <= last do
        local etag, elen
        etag, j = pb_varint(s, j)
        if etag == nil or etag % 8 ~= 2 then return nil end
        elen, j = pb_varint(s, j)
        if elen == nil then return nil end
        if etag == 10 then key = string.sub(s, j, j + elen - 1) end
        j = j + elen
      end
      key = key or ''
    end
    out[#out + 1] = {math.floor(tag / 8), first, last, key}
    i = last + 1
  end
  return out
end

-- A job's metadata (md) with the queue's default (dmd) under it: encoded messages concatenated decode as
-- one merged message, so the job's correlation id and attributes win and the tags of both are kept. The
-- merge stays within the limits: the job's own is kept whole (checked at its add), and of the default
-- what still fits, in this order: its correlation id (when the job has none), its tags, then its attributes
-- the job does not set (by key: queues store them sorted, convert.py queue_config), each that fits.
-- Neither is ever refused here: the default is the operator's, and an add it overflowed would fail for a
-- producer that sent nothing wrong (or for a chain link or a schedule's job, accepted long before).
local function merge_metadata(dmd, md)
  if md == '' then return dmd end
  if dmd == '' or #dmd + #md <= MD_SMALL then return dmd .. md end
  local own, default = md_fields(md), md_fields(dmd)
  -- Bytes this cannot read (no server writes them): the job's own alone, as it was checked.
  if own == nil or default == nil then return md end
  local has_id, tags, attributes, keys = false, 0, 0, {}
  for _, f in ipairs(own) do
    if f[1] == 1 then
      has_id = true
    elseif f[1] == 2 then
      tags = tags + 1
    elseif f[1] == 3 then
      attributes = attributes + 1
      keys[f[4]] = true
    end
  end
  local kept, size = {}, #md
  for number = 1, 3 do
    for _, f in ipairs(default) do
      if f[1] == number then
        local n = f[3] - f[2] + 1
        local fits = size + n <= MD_MAX_BYTES
        if number == 1 then
          fits = fits and not has_id
        elseif number == 2 then
          fits = fits and tags < MD_MAX_TAGS
          if fits then tags = tags + 1 end
        else
          fits = fits and not keys[f[4]] and attributes < MD_MAX_ATTRIBUTES
          if fits then attributes = attributes + 1 end
        end
        if fits then
          kept[#kept + 1] = string.sub(dmd, f[2], f[3])
          size = size + n
        end
      end
    end
  end
  kept[#kept + 1] = md
  return table.concat(kept)
end

-- Dedup modes (header field 22, Dedup.mode's number): EXTEND restarts a held key's ttl, REPLACE replaces
-- the job holding it while that job has not started. Any other value keeps the first job.
local DEDUP_EXTEND, DEDUP_REPLACE = '2', '3'

-- An add whose dedup key (dkey, its ttl dttl: 0 for none) names the job `holder`, by the add's mode (h[22]).
-- Returns nil when the key is free for the add (it creates its job, which takes the key), else insert_job's
-- code and run-at: 3 (held: the add is ignored; EXTEND restarts the ttl), 4 (REPLACE: the holder has the
-- add's name, data and content type; a delayed one runs at the run-at returned, -1 when it did not move) or
-- 5 (REPLACE: a delayed holder's new run-at has come, it is waiting now, joining `pushes`).
-- KEEP_FIRST and EXTEND: a key with a ttl holds whatever became of its job; one without a ttl whose job is
-- gone was left behind, and is free. REPLACE: only a holder that has not started (waiting or delayed, no run
-- made or lost: 'atm', 'stc') is replaced; once it started, finished or went, the add creates a new job,
-- which takes the key. The replaced job keeps its id, priority and other options, and its place: a waiting
-- one stays where it is in line (due already; moving it back would mean finding it in its list); a delayed
-- one runs at the add's own run-at (its delay or schedule_time), else now + the first add's delay ('ddl'),
-- else when it was to. Its expiry ('exp') moves with its run-at.
local function dedup_held(dkey, holder, prefix, waiting, delayed, now, h, data, dttl, pushes)
  local mode = h[22] or '0'
  local hkey = prefix .. holder
  if mode ~= DEDUP_REPLACE then
    if redis.call('EXISTS', hkey) == 0 and redis.call('PTTL', dkey) <= 0 then return nil end
    if mode == DEDUP_EXTEND and dttl > 0 then redis.call('PEXPIRE', dkey, dttl) end
    return 3, -1
  end
  local st, f = job_state(hkey, 'atm', 'stc', 'ct', 'ddl', 'exa')
  if (st ~= 'waiting' and st ~= 'delayed') or f[3] or f[4] then return nil end
  if dttl > 0 then redis.call('PEXPIRE', dkey, dttl) end
  -- A dedup key's job is never plain (it has 'ddk'): its 'ct' may come and go without a mark to change.
  local ct = h[3] or JSON_TYPE
  local w = {'name', h[2], 'data', data}
  if ct ~= JSON_TYPE then
    put(w, 'ct', ct)
  elseif f[5] then
    redis.call('HDEL', hkey, 'ct')
  end
  local delay, at = tonumber(h[5]) or -1, tonumber(h[6]) or -1
  if delay < 0 and at < 0 then delay = tonumber(f[6]) or -1 end
  local run = at
  if at < 0 and delay >= 0 then run = now + delay end
  if st == 'waiting' or run < 0 then
    redis.call('HSET', hkey, unpack(w))
    return 4, -1
  end
  local exa = tonumber(f[7])
  if run > now then
    put(w, 'run', run)
    if exa then
      put(w, 'exp', run + exa)
      redis.call('ZADD', queue_key(prefix, 'expiring'), run + exa, holder)
    end
    redis.call('HSET', hkey, unpack(w))
    redis.call('ZADD', delayed, run, holder)
    return 4, run
  end
  -- Due now (a delay of 0): waiting at the back of its level, as promote_job.lua makes it.
  put(w, 'rdy', now)
  if exa then
    put(w, 'exp', now + exa)
    redis.call('ZADD', queue_key(prefix, 'expiring'), now + exa, holder)
  end
  redis.call('HSET', hkey, unpack(w))
  redis.call('HDEL', hkey, 'run')
  redis.call('ZREM', delayed, holder)
  to_waiting(waiting, hkey, holder, true, pushes)
  return 5, -1
end

-- Inserts one job (waiting, or delayed when its run-at is in the future) unless its id exists or its
-- dedup key is held, or (lim: the call checks the size limits, size_limits) there is no room for it. d:
-- add_defaults(meta). pushes: the caller's gathered pushes (common.lua push_later: a job inserted waiting
-- joins its list when the caller calls push_waiting(pushes), before it returns).
-- Returns 0 (the id existed; nothing written), 1 (added waiting), 2 (added delayed), 3, 4 or 5 (the dedup
-- key is held: kept, replaced, replaced and now waiting; dedup_held), -1 (no room in the queue) or -2 (no
-- room in its group); the run-at of a delayed job (added, or replaced and moved: 4); the id that answers
-- the add (the holder's when the dedup key is held); and for an added job, the fields written but the data
-- (name/value pairs, numbers as numbers). A caller counts 1 and 2 as created, 1 and 5 as ready now.
-- The job event of an insert_job (code, run: its answer) in a watched queue (common.lua watched): a job
-- created is ADDED (a delayed one with its run-at). A pending holder a REPLACE add made due now is WAITING,
-- recorded by to_waiting as any job made ready; a kept or moved holder and an existing id are none.
local function inserted_event(prefix, code, id, name, run)
  if EVENTS and (code == 1 or code == 2) then
    job_event(prefix, id, 1, name, nil, nil, code == 2 and run or nil)
  end
end

local function insert_job(meta, waiting, delayed, prefix, d, now, h, data, md, extra, pushes, lim)
  local id = h[1]
  local jkey = prefix .. id
  if redis.call('EXISTS', jkey) == 1 then return 0, -1, id end
  -- A short header (id and name: every option at its default) with no metadata or extra fields, in a queue
  -- whose default options are the defaults too, is stored as its name, time and data, at the default level:
  -- what the general path below writes for it, without weighing each option (~0.8 µs of Valkey per add).
  -- add_jobs.lua writes the same out in its loop (kept equal by tests/test_engine.py).
  if h[3] == nil and md == '' and extra == '' and plain_defaults(d) then
    if lim then
      if lim.room(waiting, delayed, '') then return -1, -1, id end
      lim.took('', true)
    end
    redis.call('HSET', jkey, 'name', h[2], 'ts', now, 'data', data, 'p', PLAIN)
    push_later(pushes, level_key(waiting, DEFAULT_PRI), id)
    return 1, -1, id, {'name', h[2], 'ts', now}
  end
  -- A dedup key: a string naming the job that holds it, with a PX ttl or none (held until it finishes).
  local dk, dttl = h[17] or '', tonumber(h[18] or '0') or 0
  local dkey = dk ~= '' and dedup_key(prefix, dk)
  if dkey then
    local holder = redis.call('GET', dkey)
    if holder then
      local code, run = dedup_held(dkey, holder, prefix, waiting, delayed, now, h, data, dttl, pushes)
      if code then return code, run, holder end
    end
  end
  -- An add that would find its job there (its id, its dedup key) is answered so even in a full queue.
  if lim then
    local full = lim.room(waiting, delayed, h[20] or '')
    if full then return full == 'q' and -1 or -2, -1, id end
  end
  if dkey then
    if dttl > 0 then
      redis.call('SET', dkey, id, 'PX', dttl)
    else
      redis.call('SET', dkey, id)
    end
  end
  -- A short header (id and name) leaves every other field at its default (the values after 'or').
  local ct = h[3] or JSON_TYPE
  local pri = tonumber(h[4]) or 0; if pri == 0 then pri = tonumber(d[1]) or DEFAULT_PRI end
  local att = tonumber(h[7]) or 0; if att == 0 then att = tonumber(d[2]) or DEFAULT_ATT end
  local bt, bd, bj, bm = h[8] or '0', h[9], h[10], h[11]
  if bt == '0' then bt, bd, bj, bm = d[3] or '0', d[4] or '0', d[5] or '0', d[6] or '0' end
  local to = h[14] or '0'; if to == '0' then to = d[7] or '0' end
  local kc = h[12] or ''; if kc == '' then kc = d[8] or '' end
  local kf = h[13] or ''; if kf == '' then kf = d[9] or '' end
  local ms = h[15] or '0'
  local exa = tonumber(h[19] or '0') or 0; if exa == 0 then exa = tonumber(d[16]) or 0 end
  local grp = h[20] or ''
  local lifo = h[21] == '1'
  local delay, at = tonumber(h[5]) or -1, tonumber(h[6]) or -1
  local run = -1
  if delay >= 0 then run = now + delay end
  if at >= 0 then run = at end
  local st = 'waiting'
  if run > now then st = 'delayed' end
  -- A small job's hash is the largest part of its memory (engine/records.py), so what readers can assume
  -- is left out: the state of a job added waiting (a job hash without 'st' is waiting), the content type
  -- when it is JSON (most payloads), the priority and max attempts when they are the defaults. Optional
  -- fields are written only when set; readers treat a missing field as 0 / empty. The fields but
  -- the data are returned: an add answers with them, the caller holding the data it sent.
  local f = {'name', h[2], 'ts', now}
  if st ~= 'waiting' then put(f, 'st', st) end
  if ct ~= JSON_TYPE then put(f, 'ct', ct) end
  if pri ~= DEFAULT_PRI then put(f, 'pri', pri) end
  if att ~= DEFAULT_ATT then put(f, 'att', att) end
  if bt ~= '0' then put(f, 'bt', bt); put(f, 'bd', bd); put(f, 'bj', bj); put(f, 'bm', bm) end
  if kc ~= '' then put(f, 'kc', kc) end
  if kf ~= '' then put(f, 'kf', kf) end
  if to ~= '0' then put(f, 'to', to) end
  if ms ~= '0' then put(f, 'ms', ms) end
  -- Expiry counts from when the job is first ready: its add, or its run-at when that is later.
  if exa > 0 then
    put(f, 'exa', exa); put(f, 'exp', math.max(run, now) + exa)
    -- The expiry sweep's index (expire_waiting.lua): a job nobody claims in time ends as expired anyway.
    redis.call('ZADD', queue_key(prefix, 'expiring'), math.max(run, now) + exa, id)
  end
  if grp ~= '' then put(f, 'grp', grp) end
  -- Read when a delayed job becomes due (common.lua to_waiting), and by job reads; neither a claim nor a
  -- completion reads it, so a LIFO job may be plain.
  if lifo then put(f, 'lf', '1') end
  -- The queue's default metadata goes under the job's own, within the limits (merge_metadata). (A job's
  -- own metadata replaced the default whole: a traced add, whose trace context is metadata of its own,
  -- lost the queue's default correlation id, tags and attributes.)
  md = merge_metadata(d[10] or '', md)
  if md ~= '' then put(f, 'md', md) end
  if extra ~= '' then
    local e = netstrings(extra)
    for i = 1, #e, 2 do put(f, e[i], e[i + 1]) end
  end
  if dk ~= '' then
    put(f, 'ddk', dk)
    if dttl > 0 then put(f, 'ddt', dttl) end
    local dm = h[22] or '0'
    if dm ~= '0' then put(f, 'ddm', dm) end
    -- The delay a REPLACE duplicate re-delays the job by when it gives none (dedup_held).
    if dm == DEDUP_REPLACE and delay >= 0 then put(f, 'ddl', delay) end
  end
  if st == 'delayed' then put(f, 'run', run) end
  -- Written with the data, and like it left out of the fields returned: which of the fields a claim and a
  -- completion read it has none of (common.lua PLAIN). A job with an expiry is never plain: a claim must
  -- read its 'exp' (a completion need not). A job of a group is GROUP_PLAIN or has no mark: a completion
  -- must read its 'grp'.
  local n = #f
  f[n + 1] = 'data'; f[n + 2] = data
  if kc == '' and to == '0' and extra == '' and dk == '' then
    local plain = ct == JSON_TYPE and md == '' and pri >= 1 and pri <= LEVELS and pri == math.floor(pri)
      and exa == 0
    if grp == '' then
      f[n + 3] = 'p'; f[n + 4] = plain and PLAIN or FINISH_PLAIN
    elseif plain then
      f[n + 3] = 'p'; f[n + 4] = GROUP_PLAIN .. grp
    end
  end
  redis.call('HSET', jkey, unpack(f))
  f[n + 1] = nil; f[n + 2] = nil; f[n + 3] = nil; f[n + 4] = nil
  if lim then lim.took(grp, st == 'waiting') end
  if st == 'delayed' then
    redis.call('ZADD', delayed, run, id)
    return 2, run, id, f
  end
  if lifo then
    -- At the head now, each in turn: of the jobs a call adds LIFO, the last runs first.
    push_waiting({[level_key(waiting, pri, grp)] = {id}}, 'LPUSH')
  else
    push_later(pushes, level_key(waiting, pri, grp), id)
  end
  return 1, -1, id, f
end
