-- workflow.lua: the step graph of a workflow run, shared by the wf_*.lua scripts. The run is one hash
-- (KEYS[1] of those scripts); the Python side (services/workflows.py) writes the graph at creation:
--   order (every step key, definition order, space-separated), n (steps), nf (steps finished),
--   st (running, completed, failed, cancelled), and per step key k: s:k (state, below), ok:k and ko:k
--   (its on_success and on_failure step keys), dep:k (keys it depends on), rd:k (keys depending on it).
-- Step states: w (its branch has not fired), p (armed, waiting for depends_on), g (to start: its job may
-- not exist yet), s (started: its job exists), c (completed), f (failed for good), k (skipped: will never
-- run), x (cancelled).

local function wf_list(run, field)
  local v = redis.call('HGET', run, field)
  local out = {}
  if v then for k in string.gmatch(v, '%S+') do out[#out + 1] = k end end
  return out
end

local function wf_finish(run, key, state)
  redis.call('HSET', run, 's:' .. key, state)
  redis.call('HINCRBY', run, 'nf', 1)
end

-- A step whose branch fired (or a root step): to start when every step it depends on has completed.
local function wf_arm(run, key)
  if redis.call('HGET', run, 's:' .. key) ~= 'w' then return end
  for _, d in ipairs(wf_list(run, 'dep:' .. key)) do
    if redis.call('HGET', run, 's:' .. d) ~= 'c' then
      redis.call('HSET', run, 's:' .. key, 'p')
      return
    end
  end
  redis.call('HSET', run, 's:' .. key, 'g')
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

-- The keys of steps to start (state g), in definition order.
local function wf_to_start(run)
  local out = {}
  for _, k in ipairs(wf_list(run, 'order')) do
    if redis.call('HGET', run, 's:' .. k) == 'g' then out[#out + 1] = k end
  end
  return out
end
