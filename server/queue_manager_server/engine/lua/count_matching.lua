-- count_matching.lua: how many jobs of one state match a filter, reading at most N members from a position
-- (ListJobs with count_only: list_matching.lua's read, without the ids).
-- @include common
-- @include filter
--
-- KEYS[1] the state's key: the waiting key (waiting lists; paused too), or the state's zset
-- ARGV[1] job key prefix  ARGV[2] 'waiting' or the zset's state  ARGV[3] position (includes/filter.lua)
-- ARGV[4] most members read N (0: none, the size alone)
-- ARGV[5..11] the filter (includes/filter.lua read_filter)
-- Returns: {position after the last member read, the state's size, matches among the members read}
local prefix, state, start = ARGV[1], ARGV[2], tonumber(ARGV[3])
local f = read_filter(ARGV, 5)
local ids, _, _, total = members_from(state, KEYS[1], start, tonumber(ARGV[4]))
local count = 0
for _, id in ipairs(ids) do
  if job_matches(prefix .. id, f) then count = count + 1 end
end
return {start + #ids, total, count}
