-- clean.lua: removes jobs of one state set, bounded per call; the caller loops on the cursor.
-- @include common
--
-- KEYS[1] the state's zset
-- ARGV[1] job key prefix  ARGV[2] mode: "score" (score is the job's finish time), "created" (compare
--   the job's add time), "all" (remove regardless of age)  ARGV[3] cutoff ms (remove when <= cutoff)
-- ARGV[4] max to remove this call  ARGV[5] cursor (index to scan from, "created" mode)
-- ARGV[6] members to scan this call ("created" mode)
-- An unfinished job that parents wait for (WaitForChildren) ends for them as removed (common.lua
-- on_removed), by CleanQueue ("created") or DrainQueue ("all").
-- Returns: {removed, next cursor (-1 = done), flow hand-offs queued}
local set, prefix, mode = KEYS[1], ARGV[1], ARGV[2]
-- Only finished jobs are scored by finish time; the others may still hold a dedup key.
local unfinished = mode ~= 'score'
local how = ({created = 'removed by CleanQueue', all = 'removed by DrainQueue'})[mode]
local cutoff, limit, cursor, scan = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
if mode == 'score' then
  local ids = redis.call('ZRANGEBYSCORE', set, '-inf', cutoff, 'LIMIT', 0, limit)
  local removed = delete_jobs(set, prefix, ids, unfinished)
  if removed < limit then return {removed, -1, 0} end
  return {removed, 0, 0}
end
if mode == 'all' then
  local removed = delete_jobs(set, prefix, redis.call('ZRANGE', set, 0, limit - 1), unfinished, how)
  if removed < limit then return {removed, -1, REMOVED.handed} end
  return {removed, 0, REMOVED.handed}
end
local ids = redis.call('ZRANGE', set, cursor, cursor + scan - 1)
local victims = {}
for _, id in ipairs(ids) do
  if #victims >= limit then break end
  local ts = tonumber(redis.call('HGET', prefix .. id, 'ts'))
  if ts and ts <= cutoff then table.insert(victims, id) end
end
local removed = delete_jobs(set, prefix, victims, unfinished, how)
if #ids < scan and #victims < limit then return {removed, -1, REMOVED.handed} end
return {removed, cursor + scan - removed, REMOVED.handed}
