-- data.lua: replacing a job's data and its content type, shared by update_job_data.lua, retry_job.lua and
-- redrive_jobs.lua. Needs common.lua included first.

-- Writes data (of content type ct) into the job hash jkey; had_ct: the job's 'ct' field as the caller read
-- it. A job hash without 'ct' holds JSON (includes/add.lua). 'ct' is one of the fields a plain job has none
-- of (common.lua PLAIN): writing it marks the job NOT_PLAIN in the same HSET, or a claim's plain path would
-- hand the new bytes out as JSON. Dropping it leaves any mark true.
local function set_data(jkey, data, ct, had_ct)
  if ct == JSON_TYPE then
    redis.call('HSET', jkey, 'data', data)
    if had_ct then redis.call('HDEL', jkey, 'ct') end
  else
    redis.call('HSET', jkey, 'data', data, 'ct', ct, 'p', NOT_PLAIN)
  end
end
