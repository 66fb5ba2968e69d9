-- wf_started.lua: marks steps whose jobs now exist as started; a step cancelled meanwhile is reported.
-- @include workflow
--
-- KEYS[1] the run (hash)
-- ARGV: step keys whose jobs were added
-- Returns: the keys cancelled with the run meanwhile (state x: their jobs must be cancelled). A key that
--   another hand-off marked started first (two steps a fan-in step depends on finishing at once, on two
--   servers, both start it) or whose job already finished is left alone: its job is the step's run.
local out = {}
local known = {}
local found = false
for _, k in ipairs(ARGV) do
  local s = redis.call('HGET', KEYS[1], 's:' .. k)
  if s then found = true end
  if s == 'g' then
    redis.call('HSET', KEYS[1], 's:' .. k, 's')
  elseif s == 'x' then
    out[#out + 1] = k
  end
  known[k] = true
end
-- None of them is to start any more (whatever an older server left in go); a run gone stays gone.
if found then wf_go_remove(KEYS[1], known) end
return out
