-- filter.lua: which jobs a JobFilter selects, and the members of a state read after a cursor, shared by
-- list_matching.lua, count_matching.lua and the bulk actions (retry_matching, cancel_matching,
-- remove_matching). Needs common.lua included first. No index is kept for a filter (adds stay as cheap as
-- ever): a caller reads a bounded run of the state's members and tests each job (engine/search.py says how
-- the runs are paged).
--
-- Members are read in the order ListJobs shows them: waiting (or paused) by the level lists one after
-- another, then each fairness group's level lists, the groups by name (engine.py _waiting_page); delayed and
-- active by score; completed, failed and cancelled newest first. A cursor (members_after) names the last
-- member a call read, so the next call goes on after it however many members joined or left ahead of it
-- meanwhile; a bulk action's cursor is chosen among the members it read by bulk_cursor.

-- The filter in ARGV from index i: name, '1' when the name is a prefix, group, tag, correlation id, created
-- at or after (ms), created before (ms); '' for a condition not set.
local function read_filter(argv, i)
  local f = {name = argv[i], prefix = argv[i + 1] == '1', grp = argv[i + 2], tag = argv[i + 3],
    cid = argv[i + 4], after = tonumber(argv[i + 5]), before = tonumber(argv[i + 6])}
  f.md = f.tag ~= '' or f.cid ~= ''
  return f
end

-- Whether an encoded JobMetadata (a job's 'md': its own merged over the queue's default, includes/add.lua)
-- holds the tag (field 2, '' for any) and the correlation id (field 1, the last one read wins as protobuf
-- says; '' for any). Bytes this cannot read match nothing.
local function metadata_matches(md, tag, cid)
  local i, has_tag, id = 1, tag == '', ''
  while i <= #md do
    local key, len
    key, i = pb_varint(md, i)
    if key == nil then return false end
    local wire = key % 8
    if wire == 2 then
      len, i = pb_varint(md, i)
      if len == nil or i + len - 1 > #md then return false end
      if key == 10 then
        id = string.sub(md, i, i + len - 1)
      elseif key == 18 and not has_tag then
        has_tag = string.sub(md, i, i + len - 1) == tag
      end
      i = i + len
    elseif wire == 0 then
      len, i = pb_varint(md, i)
      if len == nil then return false end
    elseif wire == 1 then
      i = i + 8
    elseif wire == 5 then
      i = i + 4
    else
      return false
    end
  end
  return has_tag and (cid == '' or id == cid)
end

-- Whether the job matches the filter (read_filter); false for a job that is gone. One HMGET per job.
local function job_matches(jkey, f)
  local r = redis.call('HMGET', jkey, 'ts', 'name', 'grp', f.md and 'md' or 'ts')
  if not r[1] then return false end
  if f.name ~= '' then
    if f.prefix then
      if string.sub(r[2] or '', 1, #f.name) ~= f.name then return false end
    elseif r[2] ~= f.name then
      return false
    end
  end
  if f.grp ~= '' and r[3] ~= f.grp then return false end
  local ts = tonumber(r[1])
  if f.after and ts < f.after then return false end
  if f.before and ts >= f.before then return false end
  if f.md then return metadata_matches(r[4] or '', f.tag, f.cid) end
  return true
end

-- The waiting lists (of the waiting key) in the order ListJobs reads them: the levels, then each fairness
-- group's levels, the groups by name; each as {key, p (its level), grp ('' for the queue's own lists)}.
local function waiting_sources(key)
  local sources = {}
  for p = 1, LEVELS do sources[#sources + 1] = {key = level_key(key, p), p = p, grp = ''} end
  local groups = redis.call('HKEYS', string.sub(key, 1, -8) .. 'gwaiting')
  table.sort(groups)
  for _, grp in ipairs(groups) do
    for p = 1, LEVELS do sources[#sources + 1] = {key = level_key(key, p, grp), p = p, grp = grp} end
  end
  return sources
end

-- Whether string a sorts before b byte by byte, as a sorted set orders the members of one score (Lua's '<'
-- follows the server's locale).
local function bytes_before(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- The rank, in the order a page reads the sorted set (desc: newest first), of its first member after the
-- cursor (score, id): the order is by score, then by id byte by byte, both reversed when desc. Found by
-- bisecting the ranks of the members of that score (ZCOUNT bounds them), one member read per step, whether
-- the cursor's member is still there or not: a few dozen O(log n) reads at most, never a scan.
local function zset_after(key, desc, score, id)
  local lo
  if desc then
    lo = redis.call('ZCOUNT', key, '(' .. score, '+inf')
  else
    lo = redis.call('ZCOUNT', key, '-inf', '(' .. score)
  end
  local hi = lo + redis.call('ZCOUNT', key, score, score)
  while lo < hi do  -- the ranks [lo, hi) hold the members of that score: the first after id
    local mid = math.floor((lo + hi) / 2)
    local m = redis.call(desc and 'ZREVRANGE' or 'ZRANGE', key, mid, mid)[1]
    local after
    if desc then after = bytes_before(m, id) else after = bytes_before(id, m) end
    if after then hi = mid else lo = mid + 1 end
  end
  return lo
end

-- How far past its index when read a waiting cursor's job is sought (LPOS MAXLEN): jobs pushed to the head
-- of its list since (released, reaped, LIFO adds) move it back; past this many it counts as gone.
local CURSOR_SLACK = 1000

-- The index in the list `source` where a page goes on after the waiting cursor {index, p, grp, id}: all of
-- it (n, its length) when the list comes before the cursor's list, 0 when after. In the cursor's list, after
-- its job; when that job is gone, 0: jobs leave a list by its head when claimed, so those ahead of it are
-- gone too (one removed from the middle makes the page list again those that were ahead of it, never skip
-- one). The job is sought from the head over at most its index when read plus CURSOR_SLACK entries, no
-- further than the offset read this replaced.
local function list_after(source, n, c)
  if source.grp ~= c.grp then
    if source.grp == '' or (c.grp ~= '' and source.grp < c.grp) then return n end
    return 0
  end
  if source.p ~= c.p then return source.p < c.p and n or 0 end
  local at = redis.call('LPOS', source.key, c.id, 'MAXLEN', c.index + 1 + CURSOR_SLACK)
  return at and at + 1 or 0
end

-- The cursor a page read from ARGV (c1, c2; c1 '' for none), for the state: a sorted set's {score, id}, or a
-- waiting cursor {index, p, grp, id} from its index (c1) and "<level>\n<group>\n<id>" (c2, paging.py).
local function read_cursor(state, c1, c2)
  if c1 == '' then return nil end
  if state ~= 'waiting' then return {score = c1, id = c2} end
  local p, grp, id = string.match(c2, '^(%d)\n([^\n]*)\n(.+)$')
  return {index = tonumber(c1), p = tonumber(p), grp = grp, id = id}
end

-- Up to `limit` members of a state after `cursor` (read_cursor; nil: from the first), in ListJobs' order.
-- Returns the ids, the cursor of each ({c1, c2}: what read_cursor takes back; a waiting member's c1 is its
-- index in its list), the state's size, how many of its members are at or before the cursor (the rest, less
-- those read, follow the read) and, for the waiting lists, the list each member was read from. A limit of 0
-- reads no member: the size and that count alone.
local function members_after(state, key, cursor, limit)
  local ids, marks, lists = {}, {}, {}
  if state ~= 'waiting' then
    local desc = state == 'completed' or state == 'failed' or state == 'cancelled'
    local start = cursor and zset_after(key, desc, cursor.score, cursor.id) or 0
    if limit > 0 then
      local got = redis.call(desc and 'ZREVRANGE' or 'ZRANGE', key, start, start + limit - 1, 'WITHSCORES')
      for i = 1, #got, 2 do
        ids[#ids + 1] = got[i]; marks[#ids] = {got[i + 1], got[i]}
      end
    end
    return ids, marks, redis.call('ZCARD', key), start
  end
  local total, skipped = 0, 0
  for _, source in ipairs(waiting_sources(key)) do
    local n = redis.call('LLEN', source.key)
    local start = cursor and math.min(list_after(source, n, cursor), n) or 0
    total, skipped = total + n, skipped + start
    if #ids < limit and start < n then
      local got = redis.call('LRANGE', source.key, start, start + limit - #ids - 1)
      for i, id in ipairs(got) do
        ids[#ids + 1] = id; marks[#ids] = {start + i - 1, source.p .. '\n' .. source.grp .. '\n' .. id}
        lists[#ids] = source.key
      end
    end
  end
  return ids, marks, total, skipped, lists
end

-- Where a bulk action goes on after reading the first `read` members members_after returned (marks, their
-- cursors) and taking those whose index is in `gone` out of the state; c1, c2 the cursor it read from (c1 ''
-- for none). In a sorted set, the last member read, gone or not: the next read starts strictly after its
-- (score, id) wherever it is. In the waiting lists, the last member read that stays in its list, since a
-- cursor whose job left its list sends the next read back to that list's head (list_after), to read again
-- the jobs that stayed ahead of it; the members read after it were all taken. With none of them staying,
-- the cursor the call read from (its job, if still there, has only taken jobs after it), or on a first call
-- the last member read: every member before it was taken, so its list's head is where the rest begins.
local function bulk_cursor(state, marks, read, gone, c1, c2)
  if read == 0 then return {c1, c2} end
  if state ~= 'waiting' then return marks[read] end
  for i = read, 1, -1 do
    if not gone[i] then return marks[i] end
  end
  if c1 ~= '' then return {c1, c2} end
  return marks[read]
end

-- A value no job id can be (ids are letters, digits and '-_.@:'): what a taken list entry is set to before
-- one LREM per list drops them all (one pass over a list, where an LREM per job would scan it per job).
local TAKEN = '\0taken'

-- Takes jobs out of the waiting lists members_after read them from: lists[i], at its index marks[i][1] for
-- each index i in `picked`; grps[i] their groups (nil: none), whose waiting counts (the group's, the level's)
-- go down.
local function take_waiting(waiting, lists, marks, picked, grps)
  local touched, counts = {}, {}
  for _, i in ipairs(picked) do
    redis.call('LSET', lists[i], marks[i][1], TAKEN)
    touched[lists[i]] = true
    local grp = grps[i]
    if grp then
      local p = string.match(lists[i], 'gwait:(%d):')
      counts[grp] = counts[grp] or {}
      counts[grp][p] = (counts[grp][p] or 0) + 1
    end
  end
  for list in pairs(touched) do redis.call('LREM', list, 0, TAKEN) end
  for grp, levels in pairs(counts) do
    for p, n in pairs(levels) do groups_lib().waiting(string.sub(waiting, 1, -8), grp, -n, p) end
  end
end
