-- redrive_jobs.lua: the second step of a redrive (engine/redrive.py): gives an original queue back the jobs
-- whose dead-letter copies redrive_take.lua took. Per copy: a failed original runs again (attempts counted
-- afresh, as retry_job.lua; with its data replaced when asked; a workflow step's job re-opens its step as a
-- retry does: includes/requeue.lua flow_retried); an original that is gone (retention, a
-- removal) is added anew under its id, name, data and content type, with the queue's default options; one in
-- any other state (run again or added anew meanwhile) is left as it is. Each take's token is recorded, so a
-- replay of this step (a server died before the dead-letter queue's outbox was cleared) changes nothing; the
-- server forgets a token once the outbox entry is gone, and tokens older than ARGV[3] are dropped here.
-- @include common
-- @include add
-- @include data
-- @include requeue
-- @include stats
--
-- KEYS[1] meta (hash)  KEYS[2] waiting (lists)  KEYS[3] delayed (zset)  KEYS[4] failed (zset)
-- KEYS[5] redriven (zset: token -> when applied, ms)
-- ARGV[1] job key prefix  ARGV[2] "1": replace a failed original's data  ARGV[3] keep tokens this many ms
-- ARGV[4] number of copies N, then N groups of 3: token, header (an add's: includes/add.lua; its id is the
--   original job's id), data (the original's, with the header's content type)
-- Returns: {-1} the queue is not registered, else a code per copy: 0 done before (a replay), 1 retried,
--   2 added anew, 3 left as it is
local meta, waiting, delayed, failed, redriven = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, replace, keep, n = ARGV[1], ARGV[2] == '1', tonumber(ARGV[3]), tonumber(ARGV[4])
local d = add_defaults(meta)
if not d[12] then return {-1} end  -- every registered queue has its 'created' time
local now = now_ms()
local out, pushes, added = {}, {}, 0
for i = 0, n - 1 do
  local token, h, data = ARGV[5 + i * 3], split_header(ARGV[6 + i * 3]), ARGV[7 + i * 3]
  local code = 0
  if not redis.call('ZSCORE', redriven, token) then
    local id = h[1]
    local jkey = prefix .. id
    local st, f = job_state(jkey, 'pri', 'wt', 'exa', 'grp', 'ct', 'flo', 'par')
    if st == 'failed' then
      redis.call('ZREM', failed, id)
      if replace then set_data(jkey, data, h[3] or JSON_TYPE, f[7]) end
      requeue(waiting, prefix, id, f[3], f[4], f[5], now, pushes, f[6])
      flow_retried(prefix, id, f[8], f[9], now)
      code = 1
    elseif not st then
      insert_job(meta, waiting, delayed, prefix, d, now, h, data, '', '', pushes, nil)
      added = added + 1
      code = 2
    else
      code = 3
    end
    redis.call('ZADD', redriven, now, token)
  end
  out[#out + 1] = code
end
push_waiting(pushes)
redis.call('ZREMRANGEBYSCORE', redriven, '-inf', now - keep)
STATS.added = STATS.added + added
write_stats(prefix, now)
return out
