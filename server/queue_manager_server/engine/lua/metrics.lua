-- metrics.lua: a queue's metrics in one atomic read: counts by state; activity since it was registered, in
-- the last 60 seconds, in the recent window and (when asked) minute by minute; since when its
-- longest-waiting ready job has been ready; the rate-limit bucket refilled to now and any retry-after hold.
-- @include common
--
-- KEYS[1] meta  KEYS[2] waiting (lists)  KEYS[3] delayed  KEYS[4] active  KEYS[5] completed  KEYS[6] failed
-- KEYS[7] cancelled  KEYS[8] limiter
-- ARGV[1] minutes of history (0: none)  ARGV[2] minutes of the recent window  ARGV[3] duration buckets B
-- The stats, minute and seconds hashes (engine/keys.py; written by includes/stats.lua) and the jobs'
-- hashes are derived from the meta key.
-- Returns: {-1} when the queue is not registered, else
--   {1, paused flag, waiting, delayed, active, completed, failed, stalled (expired leases), stalled total,
--   cancelled, now,
--   since registered {added, completed, failed, run µs, h1..hB},
--   last 60 s {completed, failed},
--   recent window {added, completed, failed, run µs, h1..hB},
--   ready since (ms; -1: no job ready), rate-limit tokens (a string; "0" without a limit), held until (0: no
--   hold), history {{minute start ms, added, completed, failed, runs, run µs}, ...} oldest first,
--   per priority level from the first {ready jobs, ready since (-1: none), ...},
--   jobs expired since registered (includes/claim.lua), fairness groups known (common.lua 'groups'), groups
--   paused, the queue's dead-letter queue (meta 'dlq'; '' for none), failed runs since registered that
--   raised and that timed out (stats 'r' and 't', includes/stats.lua), when a timed pause lifts (meta
--   'paused_until', ms; 0 for none: set_paused.lua), when a maintenance window holding it ends (meta 'pwin';
--   0 for none: set_window.lua)}
-- Waiting counts the groups' jobs too (meta 'gw'), and so do the levels (meta 'gw<level>') and "ready
-- since" (the heads of their lists, a few hundred at most).
-- A job's "ready since" is the latest of its add time, its run-at (a delayed job, a retry's backoff) and when
-- a promotion or a retry made it ready ('rdy');
-- the oldest is among the first job of each priority level in waiting (FIFO within a level). Jobs a priority
-- bound moved to the head of the first level (age_waiting.lua) count under their own priority: the first
-- AGED_SCAN of them are read one by one (they are few: they run next), any beyond count under the first.
local meta, waiting, limiter = KEYS[1], KEYS[2], KEYS[8]
if redis.call('EXISTS', meta) == 0 then return {-1} end
local history_n, recent_n, buckets = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local m = redis.call('HMGET', meta, 'paused', 'stalled_total', 'rl_max', 'rl_ms', 'expired_total', 'gw',
  'g_paused', 'dlq', 'gw1', 'gw2', 'gw3', 'gw4', 'gw5', 'rl_burst', 'paused_until', 'pwin')
local base = string.sub(meta, 1, -5)

local function num(v) return tonumber(v) or 0 end
local fields = {'a', 'c', 'f', 'us'}
for i = 1, buckets do fields[#fields + 1] = 'h' .. i end
-- A hash's activity fields as numbers; with `extra` (field names), those too, read in the same HMGET and
-- handed back apart.
local function activity(key, extra)
  local names = fields
  if extra then
    names = {unpack(fields)}
    for _, f in ipairs(extra) do names[#names + 1] = f end
  end
  local r = redis.call('HMGET', key, unpack(names))
  local more = {}
  for i = 1, #r do r[i] = num(r[i]) end
  for i = #r, #fields + 1, -1 do table.insert(more, 1, r[i]); r[i] = nil end
  return r, more
end
-- The all-time totals, and the failed runs that raised and that timed out (stats 'r' and 't').
local totals, kinds = activity(base .. 'stats', {'r', 't'})
local out = {1, num(m[1]), waiting_count(waiting), redis.call('ZCARD', KEYS[3]),
  redis.call('ZCARD', KEYS[4]), redis.call('ZCARD', KEYS[5]), redis.call('ZCARD', KEYS[6]),
  redis.call('ZCOUNT', KEYS[4], '-inf', now), num(m[2]), redis.call('ZCARD', KEYS[7]), now, totals}

-- The last 60 seconds: all of the current minute, and the later seconds of the one before.
local minute = math.floor(now / 60000)
local second = math.floor(now / 1000) % 60
local function minute_key(i) return base .. 'm:' .. string.format('%d', i) end
local cur = redis.call('HMGET', minute_key(minute), 'c', 'f')
local last = {num(cur[1]), num(cur[2])}
if second < 59 then
  local names = {}
  for s = second + 1, 59 do names[#names + 1] = 'c' .. s; names[#names + 1] = 'f' .. s end
  local prev = redis.call('HMGET', base .. 's:' .. string.format('%d', minute - 1), unpack(names))
  for i = 1, #prev, 2 do last[1] = last[1] + num(prev[i]); last[2] = last[2] + num(prev[i + 1]) end
end
out[#out + 1] = last

-- The recent window and the history, from the same minute hashes.
local recent = {}
for i = 1, #fields do recent[i] = 0 end
local history = {}
for back = math.max(recent_n, history_n) - 1, 0, -1 do
  local r = activity(minute_key(minute - back))
  if back < recent_n then
    for i = 1, #r do recent[i] = recent[i] + r[i] end
  end
  if back < history_n then
    local runs = 0
    for i = 5, #r do runs = runs + r[i] end
    history[#history + 1] = {(minute - back) * 60000, r[1], r[2], r[3], runs, r[4]}
  end
end
out[#out + 1] = recent

-- The oldest ready job: among the heads of the priority levels, per level and in all. The head of the first
-- level is the first job there whose priority is the first level's (one moved there has another).
local AGED_SCAN = 1000
local counts, oldest = {}, {}
for p = 1, LEVELS do counts[p], oldest[p] = 0, -1 end
local function ready_job(p, id)
  local f = redis.call('HMGET', base .. 'job:' .. id, 'ts', 'run', 'pri', 'rdy')
  local since = math.max(num(f[1]), num(f[2]), num(f[4]))
  local own = p
  if p == 1 then own = tonumber(f[3]) or DEFAULT_PRI end
  if oldest[own] < 0 or since < oldest[own] then oldest[own] = since end
  return own
end
local first = waiting .. ':1'
local first_len = redis.call('LLEN', first)
local aged = 0
while aged < AGED_SCAN and aged < first_len do
  local ids = redis.call('LRANGE', first, aged, aged + 99)
  local own = 1
  for _, id in ipairs(ids) do
    own = ready_job(1, id)
    if own == 1 then break end
    counts[own] = counts[own] + 1
    aged = aged + 1
  end
  if own == 1 then break end
end
counts[1] = first_len - aged
if aged >= AGED_SCAN and aged < first_len then  -- the rest count under the first level: its oldest is next
  local f = redis.call('HMGET', base .. 'job:' .. redis.call('LINDEX', first, aged), 'ts', 'run', 'rdy')
  oldest[1] = math.max(num(f[1]), num(f[2]), num(f[3]))
end
for p = 2, LEVELS do
  local level = waiting .. ':' .. p
  counts[p] = counts[p] + redis.call('LLEN', level)
  local head = redis.call('LINDEX', level, 0)
  if head then ready_job(p, head) end
end
-- The groups' jobs (common.lua): counted per level (meta 'gw<level>', the level of the list a job is in), and
-- the oldest among the heads of the lists in the rotation, waiting for a token or held back at their group's
-- limit, GROUP_SCAN of each (exact while the queue has fewer groups).
local GROUP_SCAN = 200
if num(m[6]) > 0 then
  for p = 1, LEVELS do counts[p] = counts[p] + math.max(num(m[8 + p]), 0) end
  local lists = {}
  for _, set in ipairs({'gring', 'gdelay'}) do
    for _, part in ipairs(redis.call('ZRANGE', base .. set, 0, GROUP_SCAN - 1)) do
      lists[#lists + 1] = {tonumber(string.sub(part, 1, 1)), string.sub(part, 3)}
    end
  end
  local parked = redis.call('HSCAN', base .. 'gpark', 0, 'COUNT', GROUP_SCAN)[2]
  for i = 1, #parked, 2 do
    for p = 1, LEVELS do lists[#lists + 1] = {p, parked[i]} end
  end
  for _, list in ipairs(lists) do
    local p = list[1]
    local head = redis.call('LINDEX', base .. 'gwait:' .. p .. ':' .. list[2], 0)
    if head then
      local f = redis.call('HMGET', base .. 'job:' .. head, 'ts', 'run', 'rdy')
      local since = math.max(num(f[1]), num(f[2]), num(f[3]))
      if oldest[p] < 0 or since < oldest[p] then oldest[p] = since end
    end
  end
end
local ready = -1
local levels = {}
for p = 1, LEVELS do
  if oldest[p] >= 0 and (ready < 0 or oldest[p] < ready) then ready = oldest[p] end
  levels[#levels + 1] = counts[p]
  levels[#levels + 1] = oldest[p]
end
out[#out + 1] = ready

-- The token bucket as claim.lua would find it now (full when unused long enough to have expired).
local rl_max, rl_ms = num(m[3]), num(m[4])
local b = redis.call('HMGET', limiter, 'hold', 'tokens', 'ts')
local tokens = 0
if rl_max > 0 and rl_ms > 0 then
  local burst = bucket_size(rl_max, m[14])
  tokens = tonumber(b[2]) or burst
  local last_ts = tonumber(b[3]) or now
  if now > last_ts then tokens = math.min(burst, tokens + (now - last_ts) * rl_max / rl_ms) end
  if tokens < 0 then tokens = 0 end
end
out[#out + 1] = string.format('%.6f', tokens)
local hold = num(b[1])
if hold <= now then hold = 0 end
out[#out + 1] = hold
out[#out + 1] = history
out[#out + 1] = levels
out[#out + 1] = num(m[5])
out[#out + 1] = redis.call('ZCARD', base .. 'groups')
out[#out + 1] = num(m[7])
out[#out + 1] = m[8] or ''
out[#out + 1] = kinds[1]
out[#out + 1] = kinds[2]
out[#out + 1] = num(m[15])
out[#out + 1] = num(m[16])
return out
