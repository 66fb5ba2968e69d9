-- stats.lua: a queue's activity counters (engine/keys.py `stats` and `minute`), kept per script call: a
-- script counts what it did in STATS (common.lua: fail_for_good counts failures for good there, fail_attempt
-- failed runs by kind) and calls write_stats once at its end, so a batch costs a few HINCRBYs whatever its
-- size. Needs common.lua first.

-- Upper bounds (ms) of the processing-time buckets h1..h18; h19 holds longer runs (+Inf).
-- engine/stats.py DURATION_BOUNDS_MS is the same list (a test compares them).
local DURATION_BOUNDS_MS = {1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000,
  900000, 1800000, 3600000}
-- A minute's hash outlives the hour of history (60 minutes back from the current one) counted from its first
-- write, which is no earlier than its minute's start; the per-second counts are read only while their minute
-- is the current or the previous one. The expiry is set when a write creates a field (so the hash too, when
-- it creates that), not on every write: an EXPIRE per script call was a tenth of a lone job's commands.
local MINUTE_TTL_S = 3900
local SECONDS_TTL_S = 180

-- A run's duration in µs for count_run: `us` as the worker reported it, or, when it is MEASURE_RUN (a pull
-- worker that reported none: services/pull.py), measured here from the run's start to now. The start is
-- the time its claim wrote in the job's 'wid' ("<worker id> <start ms>", includes/claim.lua), by the same
-- clock as now, so the measure holds whichever servers took the fetch and the outcome.
local MEASURE_RUN = '-2'
local function run_us(us, wid, now)
  if us ~= MEASURE_RUN then return us end
  local start = wid and tonumber(string.match(wid, ' (%d+)$'))
  if not start then return -1 end
  return math.max(now - start, 0) * 1000
end

-- Counts a finished run in the processing-time histogram; us is its duration in microseconds as the
-- worker reported it (negative, or not a number: not reported, not counted).
local function count_run(us)
  us = tonumber(us) or -1
  if us < 0 then return end
  local ms, bucket = us / 1000, #DURATION_BOUNDS_MS + 1
  for i = 1, #DURATION_BOUNDS_MS do
    if ms <= DURATION_BOUNDS_MS[i] then bucket = i; break end
  end
  STATS.hist[bucket] = (STATS.hist[bucket] or 0) + 1
  STATS.runs = STATS.runs + 1
  STATS.us = STATS.us + us
end

-- Adds what this call counted to the queue's all-time and per-minute counters (keys derived from the job
-- prefix like common.lua queue_key). Completions and failures are also counted per second of the minute,
-- in a short-lived hash of their own, so a reader can count exactly the last 60 seconds across two minutes.
local function write_stats(prefix, now)
  local s = STATS
  if s.added == 0 and s.completed == 0 and s.failed == 0 and s.runs == 0 and s.raised == 0
    and s.timed_out == 0 then return end
  local totals = queue_key(prefix, 'stats')
  local m = string.format('%d', math.floor(now / 60000))
  local minute, seconds = queue_key(prefix, 'm:' .. m), queue_key(prefix, 's:' .. m)
  local second = string.format('%d', math.floor(now / 1000) % 60)
  -- HINCRBY answers the new count: equal to the increment, the field (maybe the hash) was just created.
  local new_minute, new_seconds = false, false
  local function add(field, n)
    if n > 0 then
      local v = string.format('%.0f', n)
      redis.call('HINCRBY', totals, field, v)
      if redis.call('HINCRBY', minute, field, v) == tonumber(v) then new_minute = true end
    end
  end
  local function add_second(field, n)
    if n > 0 and redis.call('HINCRBY', seconds, field .. second, string.format('%d', n)) == n then
      new_seconds = true
    end
  end
  add('a', s.added)
  add('c', s.completed)
  add('f', s.failed)
  -- Failed runs by kind: all-time only (no minute or second counts), one HINCRBY per kind a call met.
  if s.raised > 0 then redis.call('HINCRBY', totals, 'r', s.raised) end
  if s.timed_out > 0 then redis.call('HINCRBY', totals, 't', s.timed_out) end
  add_second('c', s.completed)
  add_second('f', s.failed)
  if new_seconds then redis.call('EXPIRE', seconds, SECONDS_TTL_S) end
  if s.runs > 0 then
    add('us', s.us)
    for bucket, n in pairs(s.hist) do add('h' .. bucket, n) end
  end
  if new_minute then redis.call('EXPIRE', minute, MINUTE_TTL_S) end
end
