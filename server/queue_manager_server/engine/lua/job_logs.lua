-- job_logs.lua: reads a page of a job's log lines, numbered stably (line numbers count every line ever
-- added, so old lines dropped meanwhile never shift a page). Writes nothing.
-- @include common
--
-- KEYS[1] the job (hash)
-- ARGV[1] job key prefix  ARGV[2] job id  ARGV[3] first line number (< 0: the last -n lines)
-- ARGV[4] most lines to return
-- Returns: {-2} when the job does not exist, else {lines kept, number of the first line returned,
--   number of the line after the last one ever added, then the lines ("<ms> <text>"), oldest first}
local jkey = KEYS[1]
local start, count = tonumber(ARGV[3]), tonumber(ARGV[4])
local f = redis.call('HMGET', jkey, 'ts', 'lgn')
if not f[1] then return {-2} end
local lkey = job_logs_key(ARGV[1], ARGV[2])
local kept = redis.call('LLEN', lkey)
local total = tonumber(f[2]) or 0
local first = total - kept
if start < 0 then start = total + start end
if start < first then start = first end
local out = {kept, start, total}
if count > 0 and start < total then
  for _, line in ipairs(redis.call('LRANGE', lkey, start - first, start - first + count - 1)) do
    out[#out + 1] = line
  end
end
return out
