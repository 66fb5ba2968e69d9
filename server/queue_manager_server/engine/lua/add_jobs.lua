-- add_jobs.lua: adds a batch of jobs to one queue (waiting or delayed), idempotent on job id.
-- @include common
--
-- KEYS[1] meta      (hash)   KEYS[2] waiting (zset)   KEYS[3] delayed (zset)
-- ARGV[1] job key prefix  ARGV[2] events channel  ARGV[3] queue name (for the events)
-- ARGV[4] first seq to use (0 = take N from the queue's counter; else reserved with reserve_seq.lua)
-- ARGV[5] number of jobs N; then N groups of 3: header, data, metadata (encoded JobMetadata or "").
--   header: 15 fields, each followed by a NUL byte (few arguments keep the call cheap to encode):
--   id, name, content type, priority (0 = queue default), delay ms (-1 = none), run-at ms (-1 = none),
--   attempts (0 = default), backoff type (0 = default, 1 fixed, 2 exponential), backoff delay ms,
--   backoff jitter, backoff max ms, keep-completed policy, keep-failed policy, timeout ms,
--   max stalled (0 = default)
-- Returns: {now, waiting added, earliest run-at of delayed jobs added (-1 = none), then per job:
--   id, created (1) or existing (0)}
--   or {-1} when the queue is not registered.
local meta, waiting, delayed = KEYS[1], KEYS[2], KEYS[3]
local prefix, channel, queue, seq, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])

if redis.call('EXISTS', meta) == 0 then return {-1} end
local d = redis.call('HMGET', meta, 'd_pri', 'd_att', 'd_bt', 'd_bd', 'd_bj', 'd_bm', 'd_to', 'd_kc', 'd_kf',
  'd_md')
local now = now_ms()
-- FIFO within a priority level follows seq; a bulk writer reserves its range up front, so chunks written
-- concurrently keep the order in which they were sent.
if seq == 0 then seq = redis.call('HINCRBY', meta, 'seq', n) - n + 1 end
local out = {now, 0, -1}
local added_waiting, earliest = 0, -1

for i = 0, n - 1 do
  local b = 5 + i * 3
  local h = {}
  for v in string.gmatch(ARGV[b + 1], '([^%z]*)%z') do h[#h + 1] = v end
  local id = h[1]
  local jkey = prefix .. id
  if redis.call('EXISTS', jkey) == 1 then
    table.insert(out, id); table.insert(out, 0)
  else
    local pri = tonumber(h[4]); if pri == 0 then pri = tonumber(d[1]) or 3 end
    local att = tonumber(h[7]); if att == 0 then att = tonumber(d[2]) or 1 end
    local bt, bd, bj, bm = h[8], h[9], h[10], h[11]
    if bt == '0' then bt, bd, bj, bm = d[3] or '0', d[4] or '0', d[5] or '0', d[6] or '0' end
    local to = h[14]; if to == '0' then to = d[7] or '0' end
    local kc = h[12]; if kc == '' then kc = d[8] or '' end
    local kf = h[13]; if kf == '' then kf = d[9] or '' end
    local run = -1
    if tonumber(h[5]) >= 0 then run = now + tonumber(h[5]) end
    if tonumber(h[6]) >= 0 then run = tonumber(h[6]) end
    local st = 'waiting'
    if run > now then st = 'delayed' end
    redis.call('HSET', jkey, 'name', h[2], 'data', ARGV[b + 2], 'ct', h[3], 'pri', pri, 'seq', seq,
      'att', att, 'ts', now, 'st', st)
    -- Optional fields are written only when set; readers treat a missing field as 0 / empty.
    if bt ~= '0' then redis.call('HSET', jkey, 'bt', bt, 'bd', bd, 'bj', bj, 'bm', bm) end
    if kc ~= '' then redis.call('HSET', jkey, 'kc', kc) end
    if kf ~= '' then redis.call('HSET', jkey, 'kf', kf) end
    if to ~= '0' then redis.call('HSET', jkey, 'to', to) end
    if h[15] ~= '0' then redis.call('HSET', jkey, 'ms', h[15]) end
    local md = ARGV[b + 3]; if md == '' then md = d[10] or '' end
    if md ~= '' then redis.call('HSET', jkey, 'md', md) end
    if st == 'delayed' then
      redis.call('HSET', jkey, 'run', run)
      redis.call('ZADD', delayed, run, id)
      if earliest < 0 or run < earliest then earliest = run end
    else
      redis.call('ZADD', waiting, pri * PRI_SHIFT + seq, id)
      added_waiting = added_waiting + 1
    end
    table.insert(out, id); table.insert(out, 1)
  end
  seq = seq + 1
end
out[2], out[3] = added_waiting, earliest
-- Wake every server: idle workers get waiting jobs at once; delays arm promotion timers.
if added_waiting > 0 then redis.call('PUBLISH', channel, 'w ' .. queue) end
if earliest >= 0 then redis.call('PUBLISH', channel, 'd ' .. queue .. ' ' .. string.format('%d', earliest)) end
return out
