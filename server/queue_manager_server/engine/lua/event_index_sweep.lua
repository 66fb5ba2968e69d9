-- event_index_sweep.lua: on a Redis Cluster, the janitor's sweep of the keys' indexes, second step: after
-- event_index_due.lua read the entries (at ARGV[1]) and the server found some queues with no waiters set
-- left for the key, those leave the key's index under event_done.lua's rule (not indexed again since the
-- read, and indexed more than `grace` ms before it). A key whose index is then gone leaves the list of keys;
-- one still indexed goes to its back, unless it was indexed again since the read.
--
-- KEYS[1] the keys with an index (zset: event key -> ms last indexed)
-- ARGV[1] when the entries were read, ms  ARGV[2] grace ms  ARGV[3] the indexes' key prefix; then per key:
--   the key, its score as read, number of queues Q, Q pairs queue, ms indexed as read
-- Returns: how many entries left the indexes
local listed, read_at, grace, base = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local removed, i = 0, 4
while i <= #ARGV do
  local key, score, n = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local index = base .. key
  for j = i + 3, i + 2 + 2 * n, 2 do
    local indexed = tonumber(ARGV[j + 1])
    if tonumber(redis.call('ZSCORE', index, ARGV[j])) == indexed and indexed < read_at - grace then
      removed = removed + redis.call('ZREM', index, ARGV[j])
    end
  end
  if tonumber(redis.call('ZSCORE', listed, key)) == score then
    if redis.call('EXISTS', index) == 0 then
      redis.call('ZREM', listed, key)
    else
      redis.call('ZADD', listed, read_at, key)
    end
  end
  i = i + 3 + 2 * n
end
return removed
