-- delete_schedule.lua: deletes a schedule; the jobs it already added stay.
--
-- KEYS[1] schedules (hash)  KEYS[2] schedule-due (zset)  KEYS[3] schedule-runs (hash)
-- ARGV[1] schedule id
-- Returns: {definition, runs, due ms (-1 = none)} as they were, or {} when there is no such schedule.
local schedules, due, runs, id = KEYS[1], KEYS[2], KEYS[3], ARGV[1]

local definition = redis.call('HGET', schedules, id)
if not definition then return {} end
local state = redis.call('HGET', runs, id) or ''
local score = redis.call('ZSCORE', due, id)
redis.call('HDEL', schedules, id)
redis.call('HDEL', runs, id)
redis.call('ZREM', due, id)
return {definition, state, score and string.format('%d', tonumber(score)) or '-1'}
