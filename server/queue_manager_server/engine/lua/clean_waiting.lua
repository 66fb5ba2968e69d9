-- clean_waiting.lua: removes waiting (or paused) jobs, bounded per call; the caller loops on the cursor.
-- clean.lua does the same for the states kept in sorted sets.
-- @include common
--
-- KEYS[1] waiting (lists)
-- ARGV[1] job key prefix  ARGV[2] mode: "created" (jobs added at or before the cutoff) or "all"
-- ARGV[3] cutoff ms  ARGV[4] max to remove this call  ARGV[5] cursor (a position in the levels taken one
--   after another, the first level first; "created" mode)  ARGV[6] jobs to scan this call ("created" mode)
-- A job that parents wait for (WaitForChildren) ends for them as removed (common.lua on_removed), by
-- CleanQueue ("created") or DrainQueue ("all").
-- Returns: {removed, next cursor (-1 = done), flow hand-offs queued}
local waiting, prefix, mode = KEYS[1], ARGV[1], ARGV[2]
local cutoff, limit, cursor, scan = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
if mode == 'all' then
  local removed = delete_waiting(waiting, prefix, limit, 'removed by DrainQueue')
  if removed < limit then return {removed, -1, REMOVED.handed} end
  return {removed, 0, REMOVED.handed}
end
-- The jobs at positions [cursor, cursor + scan) that were added at or before the cutoff. Removed jobs are
-- marked with '' (never a job id) and taken out with one LREM per level: one pass over the list, not one
-- per job. The groups' lists follow the queue's own, by group name (those with jobs waiting), so a cursor
-- stays good while groups come and go behind it.
local lists = {}
for p = 1, LEVELS do lists[#lists + 1] = {waiting .. ':' .. p} end
local base = string.sub(waiting, 1, -8)
local groups = redis.call('HKEYS', base .. 'gwaiting')
table.sort(groups)
for _, grp in ipairs(groups) do
  for p = 1, LEVELS do lists[#lists + 1] = {level_key(waiting, p, grp), grp, p} end
end
local removed, examined, start, total = 0, 0, 0, 0
for _, list in ipairs(lists) do
  local level, grp, p = list[1], list[2], list[3]
  local len = redis.call('LLEN', level)
  total = total + len
  local from = math.max(cursor + examined - start, 0)
  if from < len and examined < scan and removed < limit then
    local ids = redis.call('LRANGE', level, from, from + scan - examined - 1)
    local victims = {}
    for i, id in ipairs(ids) do
      if removed + #victims >= limit then break end
      examined = examined + 1
      local ts = tonumber(redis.call('HGET', prefix .. id, 'ts'))
      if ts and ts <= cutoff then
        victims[#victims + 1] = id
        redis.call('LSET', level, from + i - 1, '')
      end
    end
    if #victims > 0 then
      delete_hashes(prefix, victims, true, 'removed by CleanQueue')
      redis.call('LREM', level, #victims, '')
      removed = removed + #victims
      if grp then groups_lib().waiting(base, grp, -#victims, p) end
    end
  end
  start = start + len
end
if cursor + examined >= total then return {removed, -1, REMOVED.handed} end
return {removed, cursor + examined - removed, REMOVED.handed}
