-- expire_waiting.lua: ends the jobs whose expiry ('exp', JobOptions.expire_after) has passed while they
-- waited (or were delayed past their run time) with no claim to find them: cancelled as expired, as a
-- claim ends them (includes/claim.lua expire_job), so a queue without workers shows them as what they are
-- and their flows take their cancelled path. The 'expiring' set (job id -> its expiry when it was written:
-- includes/add.lua, includes/requeue.lua) says which to look at; a job since claimed, finished or removed
-- leaves it here, and one whose expiry was renewed (a promotion, a retry) is put back at the new time.
-- @include common
-- @include claim
--
-- KEYS[1] meta (hash)  KEYS[2] waiting (lists)  KEYS[3] delayed (zset)
-- ARGV[1] job key prefix  ARGV[2] most entries to look at
-- Returns: {jobs expired, flow hand-offs queued, entries looked at}
local meta, waiting, delayed = KEYS[1], KEYS[2], KEYS[3]
local prefix, limit = ARGV[1], tonumber(ARGV[2])
local expiring = queue_key(prefix, 'expiring')
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', expiring, '-inf', now, 'LIMIT', 0, limit)
if #due == 0 then return {0, 0, 0} end
local expired, handoffs = 0, 0
local later = {}
for _, id in ipairs(due) do
  local jkey = prefix .. id
  local f = redis.call('HMGET', jkey, 'st', 'ts', 'exp', 'pri', 'grp')
  local st = f[1] or (f[2] and 'waiting')
  local exp = tonumber(f[3])
  if exp and (st == 'waiting' or st == 'delayed') then
    if exp > now then
      later[#later + 1] = exp
      later[#later + 1] = id
    else
      watch_settings(meta, now)
      if st == 'waiting' then
        remove_waiting(waiting, f[4], id, f[5])
      else
        redis.call('ZREM', delayed, id)
      end
      handoffs = handoffs + expire_job(meta, prefix, id, jkey, exp, now)
      expired = expired + 1
    end
  end
end
redis.call('ZREM', expiring, unpack(due))
if #later > 0 then redis.call('ZADD', expiring, unpack(later)) end
if expired > 0 then redis.call('HINCRBY', meta, 'expired_total', expired) end
publish_events(prefix, now)
return {expired, handoffs, #due}
