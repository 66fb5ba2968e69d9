-- wf_create.lua: creates a workflow run with its step graph, unless a run with this id exists.
-- @include workflow
--
-- KEYS[1] the run (hash)
-- ARGV: field/value pairs of the run as services/workflows.py lays it out (see includes/workflow.lua;
--   root steps without depends_on come as state g, other roots as p, nested steps as w)
-- Returns: {created (1/0), then the keys of steps to start}
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'ts', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
-- In slices: unpack() of a whole large run would overflow Lua's stack.
for i = 1, #ARGV, 1000 do redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV))) end
local out = {1}
for _, k in ipairs(wf_to_start(KEYS[1])) do out[#out + 1] = k end
return out
