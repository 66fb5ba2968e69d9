-- fire_schedule.lua: adds the jobs of a schedule's due occurrences and moves it to its next due time, if
-- nothing changed it since the caller read it (compare-and-set on its due time and firing state). Two
-- servers firing the same occurrence together therefore add its jobs once: the second one finds the due
-- time moved and writes nothing.
-- @include common
-- @include add
-- @include stats
--
-- KEYS[1] meta  KEYS[2] waiting  KEYS[3] delayed  KEYS[4] schedule-due (zset)  KEYS[5] schedule-runs (hash)
-- ARGV[1] job key prefix  ARGV[2] events channel  ARGV[3] queue name  ARGV[4] schedule id
-- ARGV[5] due ms the caller read  ARGV[6] firing state the caller read (see upsert_schedule.lua)
-- ARGV[7] next due ms (-1 = none: the schedule is over)  ARGV[8] number of jobs N (one per occurrence,
--   oldest first; may be 0 when missed occurrences are skipped); then N groups of 4: header, data,
--   metadata, extra fields (see includes/add.lua)
-- Returns: {1, now, jobs created} when fired, {0} when the schedule changed meanwhile (nothing written),
--   or {-1} when the queue is not registered. The jobs created count in the queue's activity (stats.lua).
local meta, waiting, delayed, due, runs = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, channel, queue, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local next_due, n = tonumber(ARGV[7]), tonumber(ARGV[8])

if redis.call('EXISTS', meta) == 0 then return {-1} end
local score = redis.call('ZSCORE', due, id)
if not score or tonumber(score) ~= tonumber(ARGV[5]) then return {0} end
local state = redis.call('HGET', runs, id)
if state ~= ARGV[6] then return {0} end

local rev, count, last, job = string.match(state, '^(%S+) (%d+) (%-?%d+) (.*)$')
local now = now_ms()
local created, added_waiting, earliest = 0, 0, -1
if n > 0 then
  local d = add_defaults(meta)
  watched(d[21], now)
  local pushes = {}
  for i = 0, n - 1 do
    local b = 8 + i * 4
    local h = split_header(ARGV[b + 1])
    local code, run, got = insert_job(meta, waiting, delayed, prefix, d, now, h, ARGV[b + 2],
      ARGV[b + 3], ARGV[b + 4], pushes)
    inserted_event(prefix, code, got, h[2], run)
    if code == 1 or code == 2 then created = created + 1 end
    if code == 1 or code == 5 then
      added_waiting = added_waiting + 1
    elseif run >= 0 and (earliest < 0 or run < earliest) then
      earliest = run
    end
    -- The job that stands for the occurrence (the holder's when a dedup key was held).
    job = got or h[1]
  end
  push_waiting(pushes)
  count, last = tonumber(count) + n, now
end
if next_due >= 0 then
  redis.call('ZADD', due, next_due, id)
else
  redis.call('ZREM', due, id)
end
redis.call('HSET', runs, id, rev .. ' ' .. count .. ' ' .. string.format('%d', last) .. ' ' .. job)
publish_ready(meta, channel, queue, added_waiting, earliest)
STATS.added = created
write_stats(prefix, now)
publish_events(prefix, now)
return {1, now, created}
