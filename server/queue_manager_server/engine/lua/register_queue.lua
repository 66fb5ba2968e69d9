-- register_queue.lua: creates or updates a queue's settings.
-- @include common
--
-- KEYS[1] meta (hash)  KEYS[2] obliterating (hash: the obliterate run holding the name, obliterate.lua)
-- ARGV[1] only if missing (1 = leave an existing queue untouched)  ARGV[2..] field, value pairs
-- Returns: {created (1/0), created ms}, or {-6} when an obliterate holds the name: a queue created now would
--   have the run's next call delete it, or keep the jobs the run has not deleted yet
local meta = KEYS[1]
local exists = redis.call('EXISTS', meta) == 1
if not exists and redis.call('EXISTS', KEYS[2]) == 1 then return {-6} end
if exists and ARGV[1] == '1' then return {0, tonumber(redis.call('HGET', meta, 'created')) or 0} end
local now = now_ms()
redis.call('HSETNX', meta, 'created', now)
redis.call('HSETNX', meta, 'paused', '0')
redis.call('HSETNX', meta, 'stalled_total', '0')
-- Workers may wait for a queue before it exists: its first jobs publish 'w' (common.lua publish_ready).
if not exists then redis.call('HSET', meta, 'hungry', '1') end
local pairs_ = {}
for i = 2, #ARGV do table.insert(pairs_, ARGV[i]) end
if #pairs_ > 0 then redis.call('HSET', meta, unpack(pairs_)) end
-- Groups their concurrency limit held back take turns again: a limit raised frees them now (one still at
-- its limit is held back again by the next claim that meets it).
if exists then
  local base = string.sub(meta, 1, -5)
  local parked = redis.call('HKEYS', base .. 'gpark')
  for _, grp in ipairs(parked) do groups_lib().rejoin(base, grp) end
  if #parked > 0 then
    redis.call('DEL', base .. 'gpark')
    local b, queue = string.match(base, '^(.*):{(.*)}:$')
    redis.call('PUBLISH', b .. ':events', 'w ' .. queue)
  end
end
local created = 1
if exists then created = 0 end
return {created, tonumber(redis.call('HGET', meta, 'created'))}
