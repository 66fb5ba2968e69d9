-- update_job_data.lua: replaces the data (and its content type) of a job that has not finished: waiting,
-- delayed or active. A run under way keeps the data it was delivered with; every later claim reads the job's
-- 'data' field (claim.lua's plain path too), so the next attempt gets the new data. With a lease token the
-- change is fenced as a completion is: the job must be active under that token.
-- @include common
--
-- KEYS[1] meta (hash)
-- ARGV[1] job key prefix  ARGV[2] job id  ARGV[3] data  ARGV[4] content type  ARGV[5] lease token ("" = none)
-- Returns: {1} changed, {-1} queue not registered, {-2} job not found, {-3, state} a token was given and the
--   job is not active under it (the run's lease was lost), {-5, state} finished (completed, failed,
--   cancelled)
local meta = KEYS[1]
local prefix, id, data, ct, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('EXISTS', meta) == 0 then return {-1} end
local jkey = prefix .. id
local st, f = job_state(jkey, 'tok', 'ct')
if not st then return {-2} end
if token ~= '' and (st ~= 'active' or f[3] ~= token) then return {-3, st} end
if st == 'completed' or st == 'failed' or st == 'cancelled' then return {-5, st} end
-- A job hash without 'ct' holds JSON (includes/add.lua). 'ct' is one of the fields a plain job has none of
-- (common.lua PLAIN): writing it marks the job NOT_PLAIN in the same HSET, or a claim's plain path would
-- hand the new bytes out as JSON. Dropping it leaves any mark true.
if ct == JSON_TYPE then
  redis.call('HSET', jkey, 'data', data)
  if f[4] then redis.call('HDEL', jkey, 'ct') end
else
  redis.call('HSET', jkey, 'data', data, 'ct', ct, 'p', NOT_PLAIN)
end
return {1}
