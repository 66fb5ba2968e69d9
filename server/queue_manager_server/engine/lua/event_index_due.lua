-- event_index_due.lua: on a Redis Cluster, the janitor's sweep of the keys' indexes
-- (services/event_pushes.py), first step: the keys not indexed for `grace` ms, oldest first, with their
-- indexes' entries, read at one time that the second step (event_index_sweep.lua) compares the entries
-- with. A queue whose waits ended with no push of the key (cancelled, removed, timed out) would otherwise
-- stay in the key's index.
-- @include common
--
-- KEYS[1] the keys with an index (zset: event key -> ms last indexed)
-- ARGV[1] grace ms  ARGV[2] most keys  ARGV[3] the indexes' key prefix (engine/keys.py event_index)
-- Returns: {now ms, then per key: the key, its score, number of entries E, E pairs queue, ms indexed}
local listed, grace, most, base = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local now = now_ms()
local out = {string.format('%d', now)}
local due = redis.call('ZRANGEBYSCORE', listed, '-inf', now - grace, 'WITHSCORES', 'LIMIT', 0, most)
for i = 1, #due, 2 do
  local entries = redis.call('ZRANGE', base .. due[i], 0, -1, 'WITHSCORES')
  out[#out + 1] = due[i]
  out[#out + 1] = due[i + 1]
  out[#out + 1] = #entries / 2
  for _, v in ipairs(entries) do out[#out + 1] = v end
end
return out
