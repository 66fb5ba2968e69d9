-- workflow.lua: the step graph of a workflow run, shared by the wf_*.lua scripts. The run is one hash
-- (KEYS[1] of those scripts); the Python side (services/workflows.py) writes the graph at creation:
--   order (every step key, definition order, space-separated), n (steps), nf (steps finished),
--   st (running, completed, failed, cancelled), and per step key k: s:k (state, below), ok:k and ko:k
--   (its on_success and on_failure step keys), dep:k (keys it depends on), rd:k (keys depending on it),
--   nd:k (how many it depends on). The scripts keep: nfail and ncx (steps failed for good and cancelled,
--   less those reopened by a retry), fts (finish time, while finished), rt:k (how often a retry reopened
--   step k), e:k and r:k/rct:k (its error, its result and content type), dc:k (how many of those have completed) and go (the
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

-- A step whose branch fired (or a root step): to start when every step it depends on has completed.
local function wf_arm(run, key)
  if redis.call('HGET', run, 's:' .. key) ~= 'w' then return end
  local nd = redis.call('HGET', run, 'nd:' .. key)
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
  redis.call('HSET', run, 's:' .. key, 'g')
  local go = wf_go(run)
  redis.call('HSET', run, 'go', go == '' and key or (go .. ' ' .. key))
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
