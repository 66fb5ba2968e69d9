-- wf_cancel.lua: cancels a running workflow run: no step starts any more, steps not started are cancelled.
-- @include common
-- @include workflow
--
-- KEYS[1] the run (hash)
-- ARGV[1] reason
-- Returns: {1, then the keys of started steps (their jobs are to be cancelled)},
--   {0, state} when the run already finished, or {-1} when there is no such run
local run = KEYS[1]
if redis.call('EXISTS', run) == 0 then return {-1} end
local st = redis.call('HGET', run, 'st')
if st ~= 'running' then return {0, st} end
redis.call('HSET', run, 'st', 'cancelled', 'cr', ARGV[1], 'fts', now_ms())
local out = {1}
for _, k in ipairs(wf_list(run, 'order')) do
  local s = redis.call('HGET', run, 's:' .. k)
  if s == 'w' or s == 'p' or s == 'g' then
    wf_finish(run, k, 'x')
    redis.call('HINCRBY', run, 'ncx', 1)
  end
  if s == 's' or s == 'g' then out[#out + 1] = k end
end
redis.call('HSET', run, 'go', '')  -- no step starts any more
return out
