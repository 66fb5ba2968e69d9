-- upsert_schedule.lua: creates or replaces a schedule of a queue; its run count and last run are kept.
-- @include common
--
-- KEYS[1] meta  KEYS[2] schedules (hash)  KEYS[3] schedule-due (zset)  KEYS[4] schedule-runs (hash)
-- ARGV[1] schedule id  ARGV[2] encoded definition (a Schedule)  ARGV[3] next due ms (-1 = none: over)
-- ARGV[4] new revision (a firing planned on the old definition no longer matches)  ARGV[5] events channel
-- ARGV[6] queue name
-- Returns: {created (1) or replaced (0), runs ("<revision> <run count> <last run ms> <last job id>")}
--   or {-1} when the queue is not registered.
local meta, schedules, due, runs = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, definition, next_due, rev = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]

if redis.call('EXISTS', meta) == 0 then return {-1} end
local created = redis.call('HSET', schedules, id, definition)
local count, last, job = '0', '-1', ''
local old = redis.call('HGET', runs, id)
if old then
  local _
  _, count, last, job = string.match(old, '^(%S+) (%d+) (%-?%d+) (.*)$')
end
local state = rev .. ' ' .. count .. ' ' .. last .. ' ' .. job
redis.call('HSET', runs, id, state)
if next_due >= 0 then
  redis.call('ZADD', due, next_due, id)
  -- Every server arms a timer for it (components/scheduler.py).
  redis.call('PUBLISH', ARGV[5], 's ' .. ARGV[6] .. ' ' .. string.format('%d', next_due))
else
  redis.call('ZREM', due, id)
end
return {created, state}
