-- redrive_take.lua: the first step of a redrive (engine/redrive.py): takes dead-letter copies out of a
-- dead-letter queue into its redrive outbox, so no worker of that queue can claim them any more. A copy taken
-- leaves its state (waiting, or for a named copy also delayed, failed or cancelled); its hash is renamed to
-- its outbox entry (so a new copy of the same job, after the original fails again, can be written under the
-- copy's id) and tagged with this take's token. The copy's id is free from here on; the entry and the outbox
-- member go once the original queue has the job back (redrive_done.lua). New data for the one named copy
-- (RedriveDeadLettersRequest.data) is recorded in its entry ('rdd' body, 'rdc' content type) by this call,
-- beside the copy's own data: the original runs with it, and a copy put back drops it (redrive_done.lua).
-- A waiting or delayed copy that parents wait for (WaitForChildren names it by its id) ends for them as
-- removed (common.lua on_removed): the copy is gone from the dead-letter queue.
-- @include common
--
-- KEYS[1] meta (hash)  KEYS[2] waiting (lists)  KEYS[3] delayed (zset)  KEYS[4] failed (zset)
-- KEYS[5] redrive outbox (zset: copy id -> when taken, ms)
-- ARGV[1] job key prefix  ARGV[2] outbox entry prefix (<prefix><copy id>: hash)  ARGV[3] token base (a taken
--   copy's token is "<base>:<n>")  ARGV[4] only copies of this original queue ("" any)  ARGV[5] most copies
--   to take K  ARGV[6] waiting entries to look at S  ARGV[7] cursor: waiting entries to pass over first (the
--   ungrouped level lists one after another)  ARGV[8] "1": the original's data is to be replaced (kept in
--   the entry, for a replay)  ARGV[9] the new data's content type ("": no new data)  ARGV[10] the new data
--   (with exactly one named copy id)  ARGV[11] number E of queues whose copies are passed over (their queue
--   is gone)  ARGV[12..11+E] those queues  ARGV[12+E..] copy ids: only these (then K, S and the cursor are
--   unused)
-- Returns: {-1} the queue is not registered, else {cursor after this call (-1: the lists were looked at to
--   their end; -1 too with named copies), {copy id, original queue, token, data, ...} per copy taken, {a code
--   per named copy id}}; a code is "ok", "missing", "not-copy", "other-queue", "no-queue", "bad-data", or the
--   state of a copy that cannot be taken ("active": a worker holds it, "completed": a worker consumed it),
--   and the number of flow hand-offs queued
local meta, waiting, delayed, failed, outbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, entry_prefix, base, want = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local k_max, s_max, cursor, replace = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
local new_ct, new_data = ARGV[9], ARGV[10]
if redis.call('EXISTS', meta) == 0 then return {-1} end
local e = tonumber(ARGV[11])
local passed = {}
for i = 12, 11 + e do passed[ARGV[i]] = true end
local now = now_ms()
local taken, n = {}, 0

-- Whether a copy's data is a dead-letter copy's (engine.py hand_off_dead_letters writes it; a person may
-- have edited it with UpdateJobData): a JSON object whose original_name and original_content_type are strings
-- and whose original_data is there, as base64 text when the content type is not JSON. The server reads the
-- same fields (engine/redrive.py); checked here so a copy it could not read is never taken.
local function copy_data_ok(data, ct)
  if ct and not string.find(string.lower(ct), '^application/json%s*;') and string.lower(ct) ~= JSON_TYPE then
    return false
  end
  local ok, body = pcall(cjson.decode, data or '')
  if not ok or type(body) ~= 'table' or type(body.original_name) ~= 'string'
      or type(body.original_content_type) ~= 'string' or body.original_data == nil then
    return false
  end
  local oct = string.lower(body.original_content_type)
  if oct == JSON_TYPE or string.find(oct, '^application/json%s*;') then return true end
  local b64 = body.original_data
  return type(b64) == 'string' and #b64 % 4 == 0 and string.find(b64, '^[A-Za-z0-9+/]*=?=?$') ~= nil
end

local function take(id)
  local jkey = prefix .. id
  local st, f = job_state(jkey, 'dlo', 'pri', 'grp', 'wt', 'exa', 'data', 'ct', 'flo')
  if not st then return 'missing' end
  local dlo = f[3]
  if not dlo or string.sub(id, 1, #dlo + 1) ~= dlo .. ':' then return 'not-copy' end
  if want ~= '' and dlo ~= want then return 'other-queue' end
  if passed[dlo] then return 'no-queue' end
  if st == 'active' or st == 'completed' then return st end
  if not copy_data_ok(f[8], f[9]) then return 'bad-data' end
  if st == 'waiting' then
    remove_waiting(waiting, f[4], id, f[5])
  else
    local set = ({delayed = delayed, failed = failed, cancelled = queue_key(prefix, 'cancelled')})[st]
    if set then redis.call('ZREM', set, id) end
  end
  if f[7] then redis.call('ZREM', queue_key(prefix, 'expiring'), id) end
  if st == 'waiting' or st == 'delayed' then
    on_removed(prefix, id, jkey, f[10], 'taken out of the dead-letter queue by RedriveDeadLetters')
  end
  notify_job(prefix, id, jkey, 'removed', f[6])
  n = n + 1
  local token = base .. ':' .. n
  local entry = entry_prefix .. id
  redis.call('DEL', job_logs_key(prefix, id))
  redis.call('RENAME', jkey, entry)
  redis.call('HSET', entry, 'rdt', token, 'rdr', replace)
  if new_ct ~= '' then redis.call('HSET', entry, 'rdd', new_data, 'rdc', new_ct) end
  redis.call('ZADD', outbox, now, id)
  taken[#taken + 1] = id; taken[#taken + 1] = dlo; taken[#taken + 1] = token; taken[#taken + 1] = f[8]
  return 'ok'
end

local codes = {}
if #ARGV >= 12 + e then
  for i = 12 + e, #ARGV do codes[#codes + 1] = take(ARGV[i]) end
  return {-1, taken, codes, REMOVED.handed}
end
new_ct = ''  -- new data goes with a named copy only
-- The window: S waiting ids after the cursor, the ungrouped level lists one after another (a copy has no
-- fairness group), read before any is taken.
local window, skip = {}, cursor
for p = 1, LEVELS do
  local level = level_key(waiting, p)
  local len = redis.call('LLEN', level)
  if skip >= len then
    skip = skip - len
  elseif #window < s_max then
    local ids = redis.call('LRANGE', level, skip, skip + s_max - #window - 1)
    for _, id in ipairs(ids) do window[#window + 1] = id end
    skip = 0
  end
end
local looked, took = 0, 0
for _, id in ipairs(window) do
  if took >= k_max then break end
  looked = looked + 1
  if take(id) == 'ok' then took = took + 1 end
end
-- What was looked at and left stays ahead of the next call's window; what was taken is gone from it.
local after = cursor + looked - took
if looked == #window and #window < s_max then after = -1 end
return {after, taken, codes, REMOVED.handed}
