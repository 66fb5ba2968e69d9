-- flow_pending.lua: the oldest pending flow hand-offs of a queue, each with its entry, in one reply (a
-- pipeline of one HGETALL per entry cost the server a command and a parsed map per entry).
-- @include common
--
-- KEYS[1] flow outbox (list)
-- ARGV[1] job key prefix  ARGV[2] most entries
-- Returns: per job 10 elements: its id, then its entry's st, res, rct, err, name, chn, par, md, kup
--   (common.lua on_finished writes them; false where absent, all false for an entry cleared meanwhile)
local prefix = ARGV[1]
local ids = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
local out = {}
local n = 0
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', queue_key(prefix, 'flow:' .. id), 'st', 'res', 'rct', 'err', 'name', 'chn',
    'par', 'md', 'kup')
  out[n + 1] = id
  for i = 1, 9 do out[n + 1 + i] = f[i] end
  n = n + 10
end
return out
