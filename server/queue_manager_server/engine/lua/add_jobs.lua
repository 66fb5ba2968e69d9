-- add_jobs.lua: adds a batch of jobs to one queue (waiting or delayed), idempotent on job id.
-- @include common
--
-- KEYS[1] meta      (hash)   KEYS[2] waiting (zset)   KEYS[3] delayed (zset)
-- ARGV[1] job key prefix
-- ARGV[2] number of jobs N; then N groups of 17 fields:
--   id, name, data, content type, priority (0 = queue default), delay ms (-1 = none),
--   run-at ms (-1 = none), attempts (0 = default), backoff type (0 = default, 1 fixed, 2 exponential),
--   backoff delay ms, backoff jitter, backoff max ms, keep-completed policy, keep-failed policy,
--   timeout ms, max stalled (0 = default), metadata (encoded JobMetadata)
-- Returns: {now, waiting added, earliest run-at of delayed jobs added (-1 = none), then per job:
--   id, created (1) or existing (0)}
--   or {-1} when the queue is not registered.
local meta, waiting, delayed = KEYS[1], KEYS[2], KEYS[3]
local prefix, n = ARGV[1], tonumber(ARGV[2])
local F = 17

if redis.call('EXISTS', meta) == 0 then return {-1} end
local d = redis.call('HMGET', meta, 'd_pri', 'd_att', 'd_bt', 'd_bd', 'd_bj', 'd_bm', 'd_to', 'd_kc', 'd_kf')
local now = now_ms()
local out = {now, 0, -1}
local added_waiting, earliest = 0, -1

for i = 0, n - 1 do
  local b = 2 + i * F
  local id = ARGV[b + 1]
  local jkey = prefix .. id
  if redis.call('EXISTS', jkey) == 1 then
    table.insert(out, id); table.insert(out, 0)
  else
    local pri = tonumber(ARGV[b + 5]); if pri == 0 then pri = tonumber(d[1]) or 3 end
    local att = tonumber(ARGV[b + 8]); if att == 0 then att = tonumber(d[2]) or 1 end
    local bt, bd, bj, bm = ARGV[b + 9], ARGV[b + 10], ARGV[b + 11], ARGV[b + 12]
    if bt == '0' then bt, bd, bj, bm = d[3] or '0', d[4] or '0', d[5] or '0', d[6] or '0' end
    local to = ARGV[b + 15]; if to == '0' then to = d[7] or '0' end
    local kc = ARGV[b + 13]; if kc == '' then kc = d[8] or '' end
    local kf = ARGV[b + 14]; if kf == '' then kf = d[9] or '' end
    local seq = redis.call('HINCRBY', meta, 'seq', 1)
    local run = -1
    if tonumber(ARGV[b + 6]) >= 0 then run = now + tonumber(ARGV[b + 6]) end
    if tonumber(ARGV[b + 7]) >= 0 then run = tonumber(ARGV[b + 7]) end
    local st = 'waiting'
    if run > now then st = 'delayed' end
    redis.call('HSET', jkey, 'name', ARGV[b + 2], 'data', ARGV[b + 3], 'ct', ARGV[b + 4], 'pri', pri,
      'seq', seq, 'att', att, 'bt', bt, 'bd', bd, 'bj', bj, 'bm', bm, 'kc', kc, 'kf', kf, 'to', to,
      'ms', ARGV[b + 16], 'md', ARGV[b + 17], 'ts', now, 'st', st, 'atm', 0, 'ats', 0, 'stc', 0)
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
end
out[2], out[3] = added_waiting, earliest
return out
