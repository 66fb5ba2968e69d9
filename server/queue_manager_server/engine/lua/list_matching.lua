-- list_matching.lua: the jobs of one state that match a filter (none: every job), reading at most N members
-- after a cursor (ListJobs' pages; includes/filter.lua members_after says what a cursor is).
-- @include common
-- @include filter
--
-- KEYS[1] the state's key: the waiting key (waiting lists; paused too), or the state's zset
-- ARGV[1] job key prefix  ARGV[2] 'waiting' or the zset's state  ARGV[3], ARGV[4] the cursor (c1, c2; c1 ''
--   from the first member: includes/filter.lua read_cursor)  ARGV[5] most members read N
-- ARGV[6] most matches M (the read stops at the M-th)  ARGV[7..13] the filter (includes/filter.lua
--   read_filter)
-- Returns: {1 when members follow the last one read else 0, the state's size, the cursor of the last member
--   read (c1, c2; '' '' when none was read), matching id...}
local prefix, state = ARGV[1], ARGV[2]
local want = tonumber(ARGV[6])
local f = read_filter(ARGV, 7)
-- No condition set (a page without a filter): every member read is listed, no job read here (the caller reads
-- each one's fields and leaves out one that is gone, as job_matches would).
local any = f.name == '' and f.grp == '' and not f.md and not f.after and not f.before
local ids, marks, total, skipped = members_after(state, KEYS[1], read_cursor(state, ARGV[3], ARGV[4]),
  tonumber(ARGV[5]))
local out, read = {0, total, '', ''}, #ids
for i, id in ipairs(ids) do
  if any or job_matches(prefix .. id, f) then
    out[#out + 1] = id
    if #out - 4 == want then
      read = i
      break
    end
  end
end
if read > 0 then out[3], out[4] = marks[read][1], marks[read][2] end
if total - skipped > read then out[1] = 1 end
return out
