-- claim.lua: leases up to N waiting jobs to a worker, after promoting due delayed jobs and applying
-- the queue's pause flag and token-bucket rate limit.
-- @include common
--
-- KEYS[1] meta (hash)  KEYS[2] waiting (zset)  KEYS[3] delayed (zset)  KEYS[4] active (zset)
-- KEYS[5] limiter (hash)
-- ARGV[1] job key prefix  ARGV[2] max jobs N  ARGV[3] lease token  ARGV[4] worker id
-- ARGV[5] lease ms        ARGV[6] max delayed jobs to promote first
-- Returns: {code, now, next delayed run-at (-1 = none), retry-after ms (> 0 when the rate limit left
--   jobs waiting), then per job 14 fields:
--   id, name, data, content type, priority, max attempts, attempts made, attempts started,
--   stalled count, created ms, metadata, timeout ms, lease expiry ms, flow view (encoded Job or "")}
--   code 0 = ok (maybe no jobs), 1 = paused, 2 = rate limited (retry-after says when), -1 = no queue
local meta, waiting, delayed, active, limiter = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, want, token, wid = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local lease, promote_max = tonumber(ARGV[5]), tonumber(ARGV[6])

if redis.call('EXISTS', meta) == 0 then return {-1, 0, -1, 0} end
local now = now_ms()

local _, next_due = promote_due(meta, delayed, waiting, prefix, now, promote_max)

local cfg = redis.call('HMGET', meta, 'paused', 'rl_max', 'rl_ms')
if cfg[1] == '1' then return {1, now, next_due, 0} end

-- Token bucket: capacity rl_max, refilled continuously at rl_max per rl_ms.
local rl_max, rl_ms = tonumber(cfg[2]) or 0, tonumber(cfg[3]) or 0
local tokens = 0
if rl_max > 0 and rl_ms > 0 then
  local b = redis.call('HMGET', limiter, 'tokens', 'ts')
  tokens = tonumber(b[1]) or rl_max
  local last = tonumber(b[2]) or now
  if now > last then tokens = math.min(rl_max, tokens + (now - last) * rl_max / rl_ms) end
  if tokens < 1 then
    redis.call('HSET', limiter, 'tokens', tostring(tokens), 'ts', now)
    return {2, now, next_due, math.ceil((1 - tokens) * rl_ms / rl_max)}
  end
  if want > math.floor(tokens) then want = math.floor(tokens) end
end

local popped = redis.call('ZPOPMIN', waiting, want)
local out = {0, now, next_due, 0}
local expiry = now + lease
local taken = 0
for i = 1, #popped, 2 do
  local id = popped[i]
  local jkey = prefix .. id
  local ats = redis.call('HINCRBY', jkey, 'ats', 1)
  redis.call('HSET', jkey, 'st', 'active', 'tok', token, 'wid', wid, 'pts', now, 'lex', expiry)
  redis.call('ZADD', active, expiry, id)
  local f = redis.call('HMGET', jkey, 'name', 'data', 'ct', 'pri', 'att', 'atm', 'stc', 'ts', 'md', 'to',
    'par')
  table.insert(out, id)
  for j = 1, 5 do table.insert(out, f[j] or '') end
  table.insert(out, f[6] or 0)
  table.insert(out, ats)
  table.insert(out, f[7] or 0)
  table.insert(out, f[8] or 0)
  table.insert(out, f[9] or '')
  table.insert(out, f[10] or 0)
  table.insert(out, expiry)
  table.insert(out, f[11] or '')
  taken = taken + 1
end
if rl_max > 0 and rl_ms > 0 then
  tokens = tokens - taken
  redis.call('HSET', limiter, 'tokens', tostring(tokens), 'ts', now)
  redis.call('PEXPIRE', limiter, rl_ms * 2)
  -- Jobs left behind by the limit: say when the next token arrives so the caller comes back then.
  if tokens < 1 and redis.call('ZCARD', waiting) > 0 then
    out[4] = math.ceil((1 - tokens) * rl_ms / rl_max)
  end
end
return out
