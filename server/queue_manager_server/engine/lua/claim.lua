-- claim.lua: leases up to N waiting jobs to a worker, after promoting due delayed jobs and applying
-- the queue's pause flag, a worker's retry-after hold, the concurrency cap and the token-bucket rate limit.
-- A claimed job with a timeout gets a deadline (start + timeout) in the deadlines set (time_out.lua).
-- A watched queue's claim publishes its job events in one message (common.lua watched).
-- @include common
-- @include claim
--
-- KEYS[1] meta (hash)  KEYS[2] waiting (lists)  KEYS[3] delayed (zset)  KEYS[4] active (zset)
-- KEYS[5] limiter (hash)
-- ARGV[1] job key prefix  ARGV[2] max jobs N  ARGV[3] lease token  ARGV[4] worker id
-- ARGV[5] lease ms        ARGV[6] max delayed jobs to promote first
-- ARGV[7..] the worker's labels (name, value pairs; none for a worker without), for the routing groups
--   (JobOptions.worker_labels: includes/claim.lua route_ok)
-- Returns: {code, now, next delayed run-at (-1 = none), retry-after ms (> 0 when the rate limit left
--   jobs waiting), bucket fill ms (how long an empty token bucket takes to fill to its burst; 0 = no rate
--   limit), flow hand-offs queued (by jobs found expired: includes/claim.lua), routing groups' entries passed
--   over (their labels are not the worker's: jobs may wait that another worker can take), then per job its number of
--   fields and those: id, name, data, created ms, then a (code, value) pair for each of the fields below the
--   job has stored (includes/claim.lua RECORD_CODES: 3 content type, 4 priority, 5 max attempts, 6 attempts
--   made, 7 stalled count, 9 metadata, 10 timeout ms, 11 flow view (encoded Job), 15 fairness group); a field left out is at its default, and attempts started are attempts made + stalled
--   count + 1}. Every job's lease expires at now + lease ms. A job stored with the defaults only is 4
--   fields; one with a priority and attempts, 8 instead of the 13 every job with an option had before (a
--   reply element costs Valkey and the server ~0.1 µs each).
--   code 0 = ok (maybe no jobs), 1 = paused, 2 = rate limited or held by a retry-after (retry-after says
--   when), 3 = at the concurrency cap (a slot freeing publishes 'w <queue>'), -1 = no queue
local meta, waiting, delayed, active, limiter = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, want, token, wid = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local lease, promote_max = tonumber(ARGV[5]), tonumber(ARGV[6])

-- Every registered queue has its 'created' time: the settings' read is the existence check too.
local cfg = redis.call('HMGET', meta, 'paused', 'rl_max', 'rl_ms', 'conc', 'created', 'gturn', 'evw', 'rl_burst')
if not cfg[5] then return {-1, 0, -1, 0, 0, 0, 0} end
local labels = nil
if #ARGV > 6 then
  labels = {}
  for i = 7, #ARGV - 1, 2 do labels[ARGV[i]] = ARGV[i + 1] end
end
-- The reply only (claim_jobs also says whether it left no ready job).
local out = claim_jobs(meta, waiting, delayed, active, limiter, prefix, want, token, wid, lease, promote_max,
  now_ms(), cfg, nil, labels)
publish_events(prefix, out[2])
return out
