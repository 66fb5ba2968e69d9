-- fail.lua: records failed runs of leased jobs (a batch): retry after backoff, or fail for good
-- and queue the dead-letter hand-off. Fenced by lease tokens.
-- @include common
--
-- KEYS[1] meta (hash)  KEYS[2] active (zset)  KEYS[3] waiting (zset)  KEYS[4] delayed (zset)
-- KEYS[5] failed (zset)  KEYS[6] dead-letter outbox (list)
-- ARGV[1] job key prefix  ARGV[2] number of jobs N; then N groups of 5 fields:
--   id, lease token, error message, stack trace, do-not-retry (1/0)
-- Returns: {now, then per job: code, run-at}: code 0 retry now (waiting), 1 retry delayed (run-at set),
--   2 failed for good, -2 job not found, -3 lease not held (stale token)
local meta, active, waiting, delayed, failed, outbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local prefix, n = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local out = {now}

for i = 0, n - 1 do
  local b = 2 + i * 5
  local id, token, msg, stack, no_retry = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
  local jkey = prefix .. id
  local code, f = lease_check(jkey, token, 'att', 'atm', 'bt', 'bd', 'bj', 'bm')
  if code ~= 0 then
    table.insert(out, code); table.insert(out, -1)
  else
    redis.call('ZREM', active, id)
    local atm = (tonumber(f[4]) or 0) + 1
    redis.call('HSET', jkey, 'atm', atm, 'err', msg, 'stk', stack)
    if no_retry ~= '1' and atm < tonumber(f[3]) then
      redis.call('HDEL', jkey, 'tok', 'wid', 'lex')
      local delay = tonumber(f[6]) or 0
      if f[5] == '2' then delay = delay * 2 ^ (atm - 1) end
      local jitter = tonumber(f[7]) or 0
      if jitter > 0 then delay = delay + math.random() * jitter * delay end
      local cap = tonumber(f[8]) or 0
      if cap > 0 and delay > cap then delay = cap end
      delay = math.floor(delay)
      if delay <= 0 then
        to_waiting(meta, waiting, jkey, id, true)
        table.insert(out, 0); table.insert(out, now)
      else
        redis.call('HSET', jkey, 'st', 'delayed', 'run', now + delay)
        redis.call('ZADD', delayed, now + delay, id)
        table.insert(out, 1); table.insert(out, now + delay)
      end
    else
      fail_for_good(meta, failed, outbox, prefix, id, now, msg, stack)
      table.insert(out, 2); table.insert(out, -1)
    end
  end
end
return out
