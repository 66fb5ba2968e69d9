-- workflow.lua: the step graph of a workflow run, shared by the wf_*.lua scripts. The run is one hash
-- (KEYS[1] of those scripts); the Python side (services/workflows.py) writes the graph at creation:
--   order (every step key, definition order, space-separated), n (steps), nf (steps finished),
--   st (running, completed, failed, cancelled), and per step key k: s:k (state, below), ok:k and ko:k
--   (its on_success and on_failure step keys), dep:k (keys it depends on), rd:k (keys depending on it),
--   nd:k (how many it depends on), if:k (its run_if conditions, when it has any). The scripts keep: nfail
--   and ncx (steps failed for good and cancelled, less those reopened by a retry), fts (finish time, while
--   finished), rt:k (how often a retry reopened step k), e:k (its error, or why run_if skipped it) and
--   r:k/rct:k (its result and content type), dc:k (how many steps it depends on have completed) and go (the
--   keys of steps in state g, in the order they were armed). With those two, a step's outcome costs what
--   the steps next to it cost, not a read of every step: a map-reduce of 1,000 maps read every step's state
--   for each map (a million reads, a second of Valkey's time for the run). A run stored before they existed
--   has neither: its go is built once from the states, and its dependencies' states are read as before.
-- Step states: w (its branch has not fired), p (armed, waiting for depends_on), g (to start: its job may
-- not exist yet), s (started: its job exists), c (completed), f (failed for good), k (skipped: will never
-- run, unless the step it was skipped for is retried: wf_reopen), x (cancelled). A run cancelled with
-- CancelWorkflow has cr (the reason, maybe empty); one settled as cancelled because a step's job was
-- cancelled has none.

local function wf_list(run, field)
  local v = redis.call('HGET', run, field)
  local out = {}
  if v then for k in string.gmatch(v, '%S+') do out[#out + 1] = k end end
  return out
end

-- The run's go field (built from the states, once, for a run stored without it).
local function wf_go(run)
  local v = redis.call('HGET', run, 'go')
  if v then return v end
  local out = {}
  for _, k in ipairs(wf_list(run, 'order')) do
    if redis.call('HGET', run, 's:' .. k) == 'g' then out[#out + 1] = k end
  end
  v = table.concat(out, ' ')
  redis.call('HSET', run, 'go', v)
  return v
end

-- Steps that left state g (started, finished or cancelled) leave go; gone: a set of their keys.
local function wf_go_remove(run, gone)
  local kept = {}
  for k in string.gmatch(wf_go(run), '%S+') do
    if not gone[k] then kept[#kept + 1] = k end
  end
  redis.call('HSET', run, 'go', table.concat(kept, ' '))
end

local function wf_finish(run, key, state)
  redis.call('HSET', run, 's:' .. key, state)
  redis.call('HINCRBY', run, 'nf', 1)
end

-- run_if (services/conditions.py writes if:k): a JSON list of conditions {s = a predecessor's key, p = the
-- path's segments, o = operator code, v = value (none for ex / nx), t = the condition as text, e = 1 to look
-- at the predecessor's error e:s instead}, looked up in the predecessor's result r:s (JSON when rct:s says
-- so; any other result is a string with no fields) or its error message (a string; missing when it has none).
-- Numbers compare as numbers, strings as strings; values of different types, or a path that leads nowhere,
-- make a condition false (but nx), never an error.

-- A JSON value's kind: table (list or object), null, number, string or boolean; nil when missing.
local function wf_kind(v)
  if v == nil then return nil end
  if v == cjson.null then return 'null' end
  return type(v)
end

local function wf_equal(a, b)
  local kind = wf_kind(a)
  if kind ~= wf_kind(b) then return false end
  if kind ~= 'table' then return a == b end
  for k, x in pairs(a) do
    if not wf_equal(x, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

-- The value at a path (segments) of a decoded result; a number segment also indexes a list (from 0).
local function wf_at(value, path)
  for _, seg in ipairs(path) do
    if type(value) ~= 'table' then return nil end
    local v = value[seg]
    if v == nil and string.match(seg, '^%d+$') then v = value[tonumber(seg) + 1] end
    value = v
  end
  return value
end

local function wf_holds(op, got, want)
  if op == 'nx' then return got == nil end
  if got == nil then return false end
  if op == 'ex' then return true end
  if op == 'eq' then return wf_equal(got, want) end
  if op == 'ne' then return wf_kind(got) == wf_kind(want) and not wf_equal(got, want) end
  if op == 'in' then
    for _, x in ipairs(want) do
      if wf_equal(got, x) then return true end
    end
    return false
  end
  if op == 'has' then
    if type(got) == 'string' then return type(want) == 'string' and string.find(got, want, 1, true) ~= nil end
    if type(got) == 'table' then
      for _, x in ipairs(got) do
        if wf_equal(x, want) then return true end
      end
    end
    return false
  end
  local kind = type(got)
  if kind ~= type(want) or (kind ~= 'number' and kind ~= 'string') then return false end
  if op == 'gt' then return got > want end
  if op == 'ge' then return got >= want end
  if op == 'lt' then return got < want end
  if op == 'le' then return got <= want end
  return false
end

-- What a condition saw, for a skip reason: its JSON (at most 200 characters) or "missing".
local function wf_shown(got)
  if got == nil then return 'missing' end
  local ok, text = pcall(cjson.encode, got)
  if not ok then return '?' end
  if #text > 200 then
    local n = 197
    while string.byte(text, n + 1) >= 128 and string.byte(text, n + 1) < 192 do n = n - 1 end  -- UTF-8
    text = string.sub(text, 1, n) .. '...'
  end
  return text
end

-- nil when every condition of the list holds, else why the step is skipped: the first that does not.
local function wf_run_if(run, conditions)
  local ok, list = pcall(cjson.decode, conditions)
  if not ok then return 'run_if: the conditions stored with the run cannot be read' end
  local results, errors = {}, {}
  for _, c in ipairs(list) do
    local result = results[c.s]
    if c.e then
      result = errors[c.s]
      if result == nil then
        local e = redis.call('HGET', run, 'e:' .. c.s)
        result = {v = e or nil}
        errors[c.s] = result
      end
    elseif result == nil then
      result = {}
      local f = redis.call('HMGET', run, 'r:' .. c.s, 'rct:' .. c.s)
      if f[1] and f[1] ~= '' then
        local ct = string.lower(string.match(f[2] or '', '^%s*([^;%s]*)'))
        if ct == 'application/json' then
          local decoded, v = pcall(cjson.decode, f[1])
          if decoded then result.v = v end
        else
          result.v = f[1]
        end
      end
      results[c.s] = result
    end
    local got = wf_at(result.v, c.p)
    if not wf_holds(c.o, got, c.v) then return 'run_if: ' .. c.t .. ' is false (' .. wf_shown(got) .. ')' end
  end
  return nil
end

-- A step that can no longer run, and everything that hangs off it or depends on it.
local function wf_skip(run, key)
  local st = redis.call('HGET', run, 's:' .. key)
  if st ~= 'w' and st ~= 'p' then return end
  wf_finish(run, key, 'k')
  for _, field in ipairs({'ok:', 'ko:', 'rd:'}) do
    for _, k in ipairs(wf_list(run, field .. key)) do wf_skip(run, k) end
  end
end

-- A step whose branch fired (or a root step): to start when every step it depends on has completed, if its
-- run_if conditions (if:k) hold then; skipped (with its reason in e:k) if one does not.
local function wf_arm(run, key)
  if redis.call('HGET', run, 's:' .. key) ~= 'w' then return end
  local f = redis.call('HMGET', run, 'nd:' .. key, 'if:' .. key)
  local nd = f[1]
  if nd then
    if (tonumber(redis.call('HGET', run, 'dc:' .. key)) or 0) < tonumber(nd) then
      redis.call('HSET', run, 's:' .. key, 'p')
      return
    end
  else  -- no count: no dependencies, or a run stored before the counts (their states are read)
    for _, d in ipairs(wf_list(run, 'dep:' .. key)) do
      if redis.call('HGET', run, 's:' .. d) ~= 'c' then
        redis.call('HSET', run, 's:' .. key, 'p')
        return
      end
    end
  end
  local skipped = f[2] and wf_run_if(run, f[2])
  if skipped then  -- due, but a run_if condition does not hold: skipped, with the reason
    redis.call('HSET', run, 'e:' .. key, skipped)
    wf_skip(run, key)
    return
  end
  redis.call('HSET', run, 's:' .. key, 'g')
  local go = wf_go(run)
  redis.call('HSET', run, 'go', go == '' and key or (go .. ' ' .. key))
end

-- Steps waiting for depends_on whose dependencies have now all completed start.
local function wf_release_dependents(run, key)
  for _, k in ipairs(wf_list(run, 'rd:' .. key)) do
    redis.call('HINCRBY', run, 'dc:' .. k, 1)
    if redis.call('HGET', run, 's:' .. k) == 'p' then
      redis.call('HSET', run, 's:' .. k, 'w')
      wf_arm(run, k)
    end
  end
end

-- Sets the run's final state once every step has finished.
local function wf_settle(run, now)
  local f = redis.call('HMGET', run, 'st', 'n', 'nf', 'nfail', 'ncx')
  if f[1] ~= 'running' or tonumber(f[3]) < tonumber(f[2]) then return f[1] end
  local st = 'completed'
  if (tonumber(f[4]) or 0) > 0 then st = 'failed' elseif (tonumber(f[5]) or 0) > 0 then st = 'cancelled' end
  redis.call('HSET', run, 'st', st, 'fts', now)
  return st
end

-- The keys of steps to start (state g), in the order they were armed. Their states are checked: a server
-- of an older version, which does not keep go, may have started one meanwhile.
local function wf_to_start(run)
  local out = {}
  for k in string.gmatch(wf_go(run), '%S+') do
    if redis.call('HGET', run, 's:' .. k) == 'g' then out[#out + 1] = k end
  end
  return out
end

-- Whether a skipped step must stay skipped: its branch can no longer fire (its parent finished the other
-- way, or was skipped or cancelled) or a step it depends on failed, was cancelled or skipped.
local function wf_blocked(run, key)
  local pk = redis.call('HGET', run, 'pk:' .. key)
  if pk then
    local ps = redis.call('HGET', run, 's:' .. pk)
    local other = redis.call('HGET', run, 'br:' .. key) == 'ok' and 'f' or 'c'
    if ps == 'k' or ps == 'x' or ps == other then return true end
  end
  for _, d in ipairs(wf_list(run, 'dep:' .. key)) do
    local ds = redis.call('HGET', run, 's:' .. d)
    if ds == 'f' or ds == 'x' or ds == 'k' then return true end
  end
  return false
end

-- A step skipped because of a step now retried runs after all, unless something else still blocks it:
-- pending again (armed when its branch already fired), and so are the steps skipped because of it.
local function wf_revive(run, key)
  if redis.call('HGET', run, 's:' .. key) ~= 'k' or wf_blocked(run, key) then return end
  redis.call('HSET', run, 's:' .. key, 'w')
  redis.call('HDEL', run, 'e:' .. key)  -- a run_if reason of an earlier decision
  redis.call('HINCRBY', run, 'nf', -1)
  local pk = redis.call('HGET', run, 'pk:' .. key)
  local fires = redis.call('HGET', run, 'br:' .. key) == 'ok' and 'c' or 'f'
  if not pk or redis.call('HGET', run, 's:' .. pk) == fires then wf_arm(run, key) end
  for _, field in ipairs({'ok:', 'ko:', 'rd:'}) do
    for _, k in ipairs(wf_list(run, field .. key)) do wf_revive(run, k) end
  end
end

-- A failed or cancelled step (cur: f or x) whose job was retried is started again: it no longer counts as
-- finished, failed or cancelled, its error goes, the steps skipped only because of it are pending again
-- (wf_revive: its dependents and both its branches; on_failure steps that already ran or were armed keep
-- their state), and a finished run runs again: no finish time, no expiry. A run cancelled with
-- CancelWorkflow is not reopened (its steps' jobs run on their own). Returns true when reopened.
local function wf_reopen(run, key, cur)
  local f = redis.call('HMGET', run, 'st', 'cr')
  if f[2] then return false end
  redis.call('HSET', run, 's:' .. key, 's')
  redis.call('HDEL', run, 'e:' .. key)
  redis.call('HINCRBY', run, 'nf', -1)
  redis.call('HINCRBY', run, cur == 'f' and 'nfail' or 'ncx', -1)
  redis.call('HINCRBY', run, 'rt:' .. key, 1)
  for _, field in ipairs({'ok:', 'ko:', 'rd:'}) do
    for _, k in ipairs(wf_list(run, field .. key)) do wf_revive(run, k) end
  end
  if f[1] ~= 'running' then
    redis.call('HSET', run, 'st', 'running')
    redis.call('HDEL', run, 'fts')
    redis.call('PERSIST', run)
  end
  return true
end
