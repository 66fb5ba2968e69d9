-- list_matching.lua: the jobs of one state that match a filter, reading at most N members from a position.
-- @include common
-- @include filter
--
-- KEYS[1] the state's key: the waiting key (waiting lists; paused too), or the state's zset
-- ARGV[1] job key prefix  ARGV[2] 'waiting' or the zset's state  ARGV[3] position (includes/filter.lua)
-- ARGV[4] most members read N  ARGV[5] most matches M (the read stops at the M-th)  ARGV[6..12] the filter
--   (includes/filter.lua read_filter)
-- Returns: {position after the last member read, the state's size, matching id...}
local prefix, state, start = ARGV[1], ARGV[2], tonumber(ARGV[3])
local want = tonumber(ARGV[5])
local f = read_filter(ARGV, 6)
local ids, _, _, total = members_from(state, KEYS[1], start, tonumber(ARGV[4]))
local out, read = {0, total}, #ids
for i, id in ipairs(ids) do
  if job_matches(prefix .. id, f) then
    out[#out + 1] = id
    if #out - 2 == want then
      read = i
      break
    end
  end
end
out[1] = start + read
return out
