-- wf_started.lua: marks steps whose jobs now exist as started; a step cancelled meanwhile is reported.
--
-- KEYS[1] the run (hash)
-- ARGV: step keys whose jobs were added
-- Returns: the keys that were no longer to start (cancelled with the run: their jobs must be cancelled)
local out = {}
for _, k in ipairs(ARGV) do
  if redis.call('HGET', KEYS[1], 's:' .. k) == 'g' then
    redis.call('HSET', KEYS[1], 's:' .. k, 's')
  else
    out[#out + 1] = k
  end
end
return out
