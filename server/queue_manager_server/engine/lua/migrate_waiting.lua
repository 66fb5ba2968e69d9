-- migrate_waiting.lua: moves the waiting jobs an older server kept in one sorted set (score = priority *
-- 2^40 + FIFO seq) into the level lists, a chunk per call from the back of the set, each job to the head of
-- its level: they keep their order, ahead of any job added to the lists meanwhile.
-- @include common
--
-- KEYS[1] waiting (the sorted set, and the base of the level lists)
-- ARGV[1] most jobs to move
-- Returns: {jobs moved, done (1: no sorted set is left)}
local waiting, chunk = KEYS[1], tonumber(ARGV[1])
if redis.call('TYPE', waiting).ok ~= 'zset' then return {0, 1} end
local tail = redis.call('ZRANGE', waiting, -chunk, -1, 'WITHSCORES')
local ids = {}
for i = #tail - 1, 1, -2 do
  redis.call('LPUSH', level_key(waiting, math.floor(tonumber(tail[i + 1]) / 1099511627776)), tail[i])
  ids[#ids + 1] = tail[i]
end
if #ids > 0 then redis.call('ZREM', waiting, unpack(ids)) end
return {#ids, redis.call('EXISTS', waiting) == 0 and 1 or 0}
