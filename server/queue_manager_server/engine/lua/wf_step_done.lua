-- wf_step_done.lua: records how a step's job finished, or that it was retried, and decides which steps start
-- next. Idempotent: a step already recorded is not recorded again, and the steps still to start are returned
-- every time (a server killed after this script and before adding their jobs is replayed by the flow
-- outbox).
-- @include common
-- @include workflow
--
-- KEYS[1] the run (hash)
-- ARGV[1] step key  ARGV[2] outcome: c completed, f failed for good, x cancelled, r retried (its job is
--   waiting again: the step reopens, includes/workflow.lua wf_reopen)
-- ARGV[3] result  ARGV[4] result content type  ARGV[5] failure reason
-- Returns: {run state, then the keys of steps to start, then (when there are any) "" and the run's fields
--   that starting them reads, as name, value pairs} or {-1} when the run no longer exists
local run, key, outcome = KEYS[1], ARGV[1], ARGV[2]
if redis.call('EXISTS', run) == 0 then return {-1} end
local now = now_ms()
local cur = redis.call('HGET', run, 's:' .. key)
if cur == 'f' or cur == 'x' then
  if outcome == cur then
    -- A replay, or a retried job that ended the same way again before its reopen was carried out: the
    -- step stays as recorded, with the latest reason.
    if redis.call('HEXISTS', run, 'e:' .. key) == 1 then redis.call('HSET', run, 'e:' .. key, ARGV[5]) end
  elseif wf_reopen(run, key, cur) then
    -- Retried: its job runs again (or ran and ended before the retry's hand-off came: recorded below).
    cur = 's'
  end
end
if outcome ~= 'r' and (cur == 'g' or cur == 's') then
  wf_finish(run, key, outcome)
  if cur == 'g' then wf_go_remove(run, {[key] = true}) end
  local running = redis.call('HGET', run, 'st') == 'running'
  if outcome == 'c' then
    redis.call('HSET', run, 'r:' .. key, ARGV[3], 'rct:' .. key, ARGV[4])
    for _, k in ipairs(wf_list(run, 'ko:' .. key)) do wf_skip(run, k) end
    for _, k in ipairs(wf_list(run, 'ok:' .. key)) do
      if running then wf_arm(run, k) else wf_skip(run, k) end
    end
    if running then wf_release_dependents(run, key) end
  else
    redis.call('HSET', run, 'e:' .. key, ARGV[5])
    if outcome == 'f' then redis.call('HINCRBY', run, 'nfail', 1) else redis.call('HINCRBY', run, 'ncx', 1) end
    for _, k in ipairs(wf_list(run, 'ok:' .. key)) do wf_skip(run, k) end
    for _, k in ipairs(wf_list(run, 'rd:' .. key)) do wf_skip(run, k) end
    for _, k in ipairs(wf_list(run, 'ko:' .. key)) do
      if running and outcome == 'f' then wf_arm(run, k) else wf_skip(run, k) end
    end
  end
end
local out = {wf_settle(run, now)}
local keys = wf_to_start(run)
for _, k in ipairs(keys) do out[#out + 1] = k end
if #keys == 0 then return out end
-- What starting those steps reads of the run (services/workflows.py start_steps): the run's metadata, each
-- step's spec and parent key, its parents' outcomes and specs. The server reads nothing more (it read the
-- whole run for every step it started).
local names, seen = {'md'}, {}
local function want(field)
  if not seen[field] then
    seen[field] = true
    names[#names + 1] = field
  end
end
for _, k in ipairs(keys) do
  want('spec:' .. k)
  want('pk:' .. k)
  local parents = wf_list(run, 'dep:' .. k)
  local pk = redis.call('HGET', run, 'pk:' .. k)
  if pk then parents[#parents + 1] = pk end
  for _, p in ipairs(parents) do
    for _, field in ipairs({'s:', 'e:', 'r:', 'rct:', 'spec:'}) do want(field .. p) end
  end
end
out[#out + 1] = ''  -- after the step keys (never empty), the fields: name, value, …
-- In slices: unpack() of a whole large run would overflow Lua's stack.
for i = 1, #names, 1000 do
  local slice = {unpack(names, i, math.min(i + 999, #names))}
  local values = redis.call('HMGET', run, unpack(slice))
  for j, field in ipairs(slice) do
    if values[j] then
      out[#out + 1] = field
      out[#out + 1] = values[j]
    end
  end
end
return out
