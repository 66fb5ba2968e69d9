-- children_done.lua: records the outcomes of finished children (or of children removed before they finished:
-- common.lua on_removed) on their parents, a batch of parents of one
-- queue (services/flows.py carries a child's flow entry here from the child's queue). A child not recorded
-- on its parent (the parent is gone, or a repeated call dropped it) or recorded with its outcome already (a
-- hand-off carried out twice) changes nothing. A parent parked for its children (includes/children.lua)
-- goes back to waiting once the last one has finished.
-- @include common
-- @include children
--
-- KEYS[1] meta (hash)  KEYS[2] delayed (zset)  KEYS[3] waiting (levels' base key)
-- ARGV[1] job key prefix  ARGV[2] events channel  ARGV[3] queue name; then per child 4 of: its parent's
--   id, its id, its queue, its outcome (an encoded Job holding one ChildJob)
-- Returns: the number of parents made waiting
local meta, delayed, waiting = KEYS[1], KEYS[2], KEYS[3]
local prefix, channel, queue = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms()
watch_settings(meta, now)
local woken = 0
for b = 4, #ARGV, 4 do
  local pid, cid, cq, outcome = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local jkey = prefix .. pid
  local field = 'k:' .. cid
  local v = redis.call('HGET', jkey, field)
  if v then
    local seq, vqueue = string.match(v, '^(%d+) (%S+)$')
    if seq and vqueue == cq then
      redis.call('HSET', jkey, field, v .. ' ' .. outcome)
      local left = redis.call('HINCRBY', jkey, 'kpn', -1)
      if left <= 0 and tonumber(redis.call('ZSCORE', delayed, pid)) == CHILDREN_PARKED then
        children_wake(waiting, delayed, jkey, pid, now)
        woken = woken + 1
      end
    end
  end
end
publish_ready(meta, channel, queue, READY.waiting, -1)
publish_events(prefix, now)
return woken
