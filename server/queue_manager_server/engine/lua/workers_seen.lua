-- workers_seen.lua: writes the registry entries of workers connected to one server (who they are, their
-- load and resource use) and removes those whose stream ended there. An entry lives until `ttl` after its
-- last write, so the workers of a server that died unannounced drop out by themselves; entries past their
-- time are deleted here (at most 100 per call).
-- @include common
--
-- KEYS[1] index (zset: worker id -> entry expiry ms)
-- ARGV[1] key prefix of the entries (<prefix><worker id>)  ARGV[2] ttl ms  ARGV[3] entries to write N
-- ARGV[4] entries to remove M; then N groups of 16: worker id, session id, server id, host, language,
--   version, queues (comma-separated), concurrency, jobs in flight, ms since its stream opened, ms since its
--   last report, CPU percent, memory bytes, labels (JSON), state (active, quiet, stopping), tier; then M groups of 2: worker id, session id (an
--   entry is removed only while that session wrote it last: the worker may have reconnected elsewhere)
-- Returns: now (ms)
local index, prefix, ttl = KEYS[1], ARGV[1], tonumber(ARGV[2])
local n, m = tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
for i = 0, n - 1 do
  local b = 4 + i * 16
  local id = ARGV[b + 1]
  local key = prefix .. id
  redis.call('HSET', key, 'ses', ARGV[b + 2], 'sid', ARGV[b + 3], 'host', ARGV[b + 4], 'lang', ARGV[b + 5],
    'ver', ARGV[b + 6], 'q', ARGV[b + 7], 'conc', ARGV[b + 8], 'inf', ARGV[b + 9],
    'cts', string.format('%d', now - tonumber(ARGV[b + 10])),
    'hb', string.format('%d', now - tonumber(ARGV[b + 11])), 'cpu', ARGV[b + 12],
    'mem', ARGV[b + 13], 'lbl', ARGV[b + 14], 'st', ARGV[b + 15], 'tier', ARGV[b + 16])
  redis.call('PEXPIRE', key, ttl)
  redis.call('ZADD', index, string.format('%d', now + ttl), id)
end
for i = 0, m - 1 do
  local id, session = ARGV[5 + n * 16 + i * 2], ARGV[6 + n * 16 + i * 2]
  if redis.call('HGET', prefix .. id, 'ses') == session then
    redis.call('DEL', prefix .. id)
    redis.call('ZREM', index, id)
  end
end
local gone = redis.call('ZRANGEBYSCORE', index, '-inf', now, 'LIMIT', 0, 100)
for _, id in ipairs(gone) do redis.call('DEL', prefix .. id) end
if #gone > 0 then redis.call('ZREM', index, unpack(gone)) end
return now
