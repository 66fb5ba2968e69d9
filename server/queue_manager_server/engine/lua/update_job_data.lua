-- update_job_data.lua: replaces the data (and its content type) of a job that has not finished: waiting,
-- delayed or active. A run under way keeps the data it was delivered with; every later claim reads the job's
-- 'data' field (claim.lua's plain path too), so the next attempt gets the new data. With a lease token the
-- change is fenced as a completion is: the job must be active under that token.
-- @include common
-- @include data
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
set_data(jkey, data, ct, f[4])
return {1}
