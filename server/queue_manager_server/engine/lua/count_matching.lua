-- count_matching.lua: how many jobs of one state match a filter, reading at most N members after a cursor
-- (ListJobs with count_only: list_matching.lua's read, without the ids).
-- @include common
-- @include filter
--
-- KEYS[1] the state's key: the waiting key (waiting lists; paused too), or the state's zset
-- ARGV[1] job key prefix  ARGV[2] 'waiting' or the zset's state  ARGV[3], ARGV[4] the cursor (c1, c2; c1 ''
--   from the first member: includes/filter.lua read_cursor)  ARGV[5] most members read N (0: none, the count
--   of members after the cursor alone)  ARGV[6..12] the filter (includes/filter.lua read_filter)
-- Returns: {1 when members follow the last one read else 0, the state's size, matches among the members
--   read (N 0: the members after the cursor), the cursor of the last member read (c1, c2; '' '' for none)}
local prefix, state = ARGV[1], ARGV[2]
local f = read_filter(ARGV, 6)
local limit = tonumber(ARGV[5])
local ids, marks, total, skipped = members_after(state, KEYS[1], read_cursor(state, ARGV[3], ARGV[4]), limit)
if limit == 0 then return {0, total, total - skipped, '', ''} end
local count = 0
for _, id in ipairs(ids) do
  if job_matches(prefix .. id, f) then count = count + 1 end
end
local last = marks[#ids] or {'', ''}
return {total - skipped > #ids and 1 or 0, total, count, last[1], last[2]}
