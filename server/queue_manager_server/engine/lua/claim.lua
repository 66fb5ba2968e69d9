-- claim.lua: leases up to N waiting jobs to a worker, after promoting due delayed jobs and applying
-- the queue's pause flag, a worker's retry-after hold, the concurrency cap and the token-bucket rate limit.
-- A claimed job with a timeout gets a deadline (start + timeout) in the deadlines set (time_out.lua).
-- @include common
-- @include claim
--
-- KEYS[1] meta (hash)  KEYS[2] waiting (lists)  KEYS[3] delayed (zset)  KEYS[4] active (zset)
-- KEYS[5] limiter (hash)
-- ARGV[1] job key prefix  ARGV[2] max jobs N  ARGV[3] lease token  ARGV[4] worker id
-- ARGV[5] lease ms        ARGV[6] max delayed jobs to promote first
-- Returns: {code, now, next delayed run-at (-1 = none), retry-after ms (> 0 when the rate limit left
--   jobs waiting), bucket fill ms (how long an empty token bucket takes to fill to its burst; 0 = no rate
--   limit), then per job its number of fields and those: 4 for a job stored with the defaults only that
--   never finished a run nor stalled (id, name, data, created ms; the rest are the defaults, and attempts
--   started 1),
--   else 13 (id, name, data, created ms, content type, priority, max attempts, attempts made, attempts
--   started, stalled count, metadata, timeout ms, flow view (encoded Job or ""))}. Every job's lease
--   expires at now + lease ms. A short record saves Valkey ~0.5 µs per job (9 reply elements).
--   code 0 = ok (maybe no jobs), 1 = paused, 2 = rate limited or held by a retry-after (retry-after says
--   when), 3 = at the concurrency cap (a slot freeing publishes 'w <queue>'), -1 = no queue
local meta, waiting, delayed, active, limiter = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, want, token, wid = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local lease, promote_max = tonumber(ARGV[5]), tonumber(ARGV[6])

-- Every registered queue has its 'created' time: the settings' read is the existence check too.
local cfg = redis.call('HMGET', meta, 'paused', 'rl_max', 'rl_ms', 'conc', 'created')
if not cfg[5] then return {-1, 0, -1, 0, 0} end
-- The reply only (claim_jobs also says whether it left no ready job).
local out = claim_jobs(meta, waiting, delayed, active, limiter, prefix, want, token, wid, lease, promote_max,
  now_ms(), cfg)
return out
