-- publish_staged.lua: adds up to N jobs of a committed bulk stream from its staged list, in stream order;
-- idempotent on job id like add_jobs.lua. Any number of callers may repeat it: each call consumes what it
-- added from the head of the list, atomically.
-- @include common
-- @include add
-- @include stats
--
-- KEYS[1] meta (hash)  KEYS[2] waiting (lists)  KEYS[3] delayed (zset)
-- KEYS[4] the stream's staged jobs in this queue (list)  KEYS[5] bulk (hash)
-- ARGV[1] job key prefix  ARGV[2] events channel  ARGV[3] queue name  ARGV[4] stream id
-- ARGV[5] most jobs to add N
-- Returns: {jobs created (ids that existed are not), done (1: nothing left, the stream's entry is
--   removed), jobs that replaced the one holding their dedup key (Dedup.mode REPLACE), then for each job
--   whose dedup key was held: its id, the holder's id}, or {-1} when the
--   queue no longer exists (its staged jobs are dropped). The jobs created count in the queue's activity.
local meta, waiting, delayed, staged, bulk = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, channel, queue, sid, n = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])

if redis.call('EXISTS', meta) == 0 then
  redis.call('UNLINK', staged)
  redis.call('HDEL', bulk, sid)
  return {-1}
end
local items = redis.call('LRANGE', staged, 0, n * 4 - 1)
local d = add_defaults(meta)
local now = now_ms()
watched(d[21], now)
local created, added_waiting, earliest = 0, 0, -1
local out = {0, 0, 0}
local pushes = {}
for i = 1, #items - 3, 4 do
  local h = split_header(items[i])
  local code, run, got = insert_job(meta, waiting, delayed, prefix, d, now, h, items[i + 1],
    items[i + 2], items[i + 3], pushes)
  inserted_event(prefix, code, got, h[2], run)
  if got ~= h[1] then table.insert(out, h[1]); table.insert(out, got) end
  if code == 1 or code == 5 then
    added_waiting = added_waiting + 1
  elseif run >= 0 and (earliest < 0 or run < earliest) then
    earliest = run
  end
  if code == 1 or code == 2 then created = created + 1 end
  if code >= 4 then out[3] = out[3] + 1 end
end
push_waiting(pushes)
redis.call('LTRIM', staged, #items, -1)
publish_ready(meta, channel, queue, added_waiting, earliest)
STATS.added = created
write_stats(prefix, now)
publish_events(prefix, now)
out[1] = created
if redis.call('EXISTS', staged) == 0 then
  redis.call('HDEL', bulk, sid)
  out[2] = 1
end
return out
