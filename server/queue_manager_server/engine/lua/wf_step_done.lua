-- wf_step_done.lua: records how a step's job finished and decides which steps start next. Idempotent: a
-- step already recorded is not recorded again, and the steps still to start are returned every time (a
-- server killed after this script and before adding their jobs is replayed by the flow outbox).
-- @include common
-- @include workflow
--
-- KEYS[1] the run (hash)
-- ARGV[1] step key  ARGV[2] outcome: c completed, f failed for good, x cancelled
-- ARGV[3] result  ARGV[4] result content type  ARGV[5] failure reason
-- Returns: {run state, then the keys of steps to start} or {-1} when the run no longer exists
local run, key, outcome = KEYS[1], ARGV[1], ARGV[2]
if redis.call('EXISTS', run) == 0 then return {-1} end
local now = now_ms()
local cur = redis.call('HGET', run, 's:' .. key)
if cur == 'g' or cur == 's' then
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
for _, k in ipairs(wf_to_start(run)) do out[#out + 1] = k end
return out
