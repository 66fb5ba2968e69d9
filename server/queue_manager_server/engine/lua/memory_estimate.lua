-- memory_estimate.lua: an estimate of the bytes of the store a queue's keys hold, in a bounded number of
-- commands however many jobs it has (engine/memory.py; docs/observability.md). The estimate is kept in the
-- queue's 'memory' key for an interval, so every server reads the same figure and the queue is measured at
-- most once per interval however many servers and metrics reads ask.
-- @include common
--
-- KEYS[1] meta  KEYS[2] memory (string: the last estimate, expiring after the interval)
-- ARGV[1] the interval (ms; 0: measure, keep nothing)  ARGV[2] jobs sampled per state K
-- ARGV[3] elements MEMORY USAGE samples of a large key  ARGV[4] random seed
-- Returns: {-1} when the queue is not registered, {-2, Redis's error} when it refuses MEMORY USAGE (an ACL
-- of a managed service may), else {1, estimated bytes, job hashes sampled (0: the kept estimate)}
--
-- The queue's own keys (the state sets and lists, meta, limiter, outboxes, schedules, the fairness groups'
-- sets and hashes, the activity hashes of the last hour) are measured one by one with MEMORY USAGE, which
-- reads a few elements of a large key and extrapolates (O(SAMPLES), not O(n)). The jobs are not: per state,
-- up to K random jobs (ZRANDMEMBER of a state set; LINDEX at random offsets of the waiting lists, those of a
-- random fairness group for a grouped job) are measured with their log list and dedup key, and their mean
-- counts once per job in that state. A state whose sample found no job takes the mean of all sampled jobs.
-- The fairness groups' own waiting lists count as the mean of up to K random groups' times the groups.
-- Not counted: the flow hand-off hashes and staged bulk lists (short-lived) and the redrive outbox entries.
-- Flagged allow-oom (engine/scripts.py): its one small write must not keep a full store from saying which
-- queue fills it.
local meta, kept = KEYS[1], KEYS[2]
if redis.call('EXISTS', meta) == 0 then return {-1} end
local last = redis.call('GET', kept)
if last then return {1, tonumber(last), 0} end
local interval, per_state, samples = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
math.randomseed(tonumber(ARGV[4]))
local base = string.sub(meta, 1, -5)
local probe = redis.pcall('MEMORY', 'USAGE', meta)
if type(probe) == 'table' and probe.err then return {-2, probe.err} end

local function usage(key)
  return tonumber(redis.call('MEMORY', 'USAGE', key, 'SAMPLES', samples)) or 0
end

local OWN = {'meta', 'waiting', 'delayed', 'active', 'completed', 'failed', 'cancelled', 'limiter',
  'dlq-outbox', 'flow-outbox', 'expiring', 'deadlines', 'bulk', 'schedules', 'schedule-due', 'schedule-runs',
  'stats', 'redrive', 'redriven', 'groups', 'gring', 'gdelay', 'gpark', 'gwaiting', 'gact', 'glimits', 'gtok',
  'gpaused', 'gpuntil', 'gpman', 'gpwin', 'gwin', 'gwnext', 'gwb'}
local total = 0
for _, name in ipairs(OWN) do total = total + usage(base .. name) end
for p = 1, LEVELS do total = total + usage(base .. 'waiting:' .. p) end
-- The minute hashes expire 65 minutes after their last write, the seconds hashes after 3 (engine/keys.py).
local minute = math.floor(now_ms() / 60000)
for i = minute - 65, minute do total = total + usage(base .. 'm:' .. string.format('%d', i)) end
for i = minute - 3, minute do total = total + usage(base .. 's:' .. string.format('%d', i)) end

-- One job's bytes: its hash, its log lines and the dedup key it holds; nil when the id has no hash.
local function job_bytes(id)
  local key = base .. 'job:' .. id
  local n = usage(key)
  if n == 0 then return nil end
  n = n + usage(base .. 'logs:' .. id)
  local ddk = redis.call('HGET', key, 'ddk')
  if ddk then n = n + usage(base .. 'dedup:' .. ddk) end
  return n
end

-- A random fairness group's waiting lists: its bytes, and a random job id among them (nil: none waits).
local function group_pick(group)
  local lens, bytes, count = {}, 0, 0
  for p = 1, LEVELS do
    local list = base .. 'gwait:' .. p .. ':' .. group
    lens[p] = redis.call('LLEN', list)
    count = count + lens[p]
    if lens[p] > 0 then bytes = bytes + usage(list) end
  end
  if count == 0 then return bytes, nil end
  local at = math.random(count) - 1
  for p = 1, LEVELS do
    if at < lens[p] then return bytes, redis.call('LINDEX', base .. 'gwait:' .. p .. ':' .. group, at) end
    at = at - lens[p]
  end
end

local sampled, sampled_bytes = 0, 0
local unsampled = 0  -- jobs of states whose sample found none
local function add_state(count, ids)
  if count == 0 then return end
  local n, bytes = 0, 0
  for _, id in ipairs(ids) do
    local b = job_bytes(id)
    if b then n, bytes = n + 1, bytes + b end
  end
  sampled, sampled_bytes = sampled + n, sampled_bytes + bytes
  if n == 0 then unsampled = unsampled + count else total = total + bytes / n * count end
end

-- Waiting (and paused): the level lists, then the groups' jobs (meta 'gw').
local lens, in_levels = {}, 0
for p = 1, LEVELS do
  lens[p] = redis.call('LLEN', base .. 'waiting:' .. p)
  in_levels = in_levels + lens[p]
end
local grouped = math.max(tonumber(redis.call('HGET', meta, 'gw')) or 0, 0)
local ids = {}
local groups = redis.call('ZCARD', base .. 'groups')
if groups > 0 then
  local list_bytes, seen = 0, 0
  for _, group in ipairs(redis.call('ZRANDMEMBER', base .. 'groups', per_state)) do
    local bytes, id = group_pick(group)
    list_bytes, seen = list_bytes + bytes, seen + 1
    if id and grouped > 0 and #ids < per_state * grouped / (grouped + in_levels) then ids[#ids + 1] = id end
  end
  total = total + list_bytes / seen * groups
end
if in_levels > 0 then
  for _ = #ids + 1, per_state do
    local at = math.random(in_levels) - 1
    for p = 1, LEVELS do
      if at < lens[p] then
        ids[#ids + 1] = redis.call('LINDEX', base .. 'waiting:' .. p, at)
        break
      end
      at = at - lens[p]
    end
  end
end
add_state(in_levels + grouped, ids)
for _, state in ipairs({'delayed', 'active', 'completed', 'failed', 'cancelled'}) do
  local key = base .. state
  add_state(redis.call('ZCARD', key), redis.call('ZRANDMEMBER', key, per_state))
end
if unsampled > 0 and sampled > 0 then total = total + sampled_bytes / sampled * unsampled end
total = math.floor(total)
if interval > 0 then redis.call('SET', kept, string.format('%d', total), 'PX', interval) end
return {1, total, sampled}
