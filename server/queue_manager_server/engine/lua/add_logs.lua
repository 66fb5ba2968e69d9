-- add_logs.lua: appends log lines of running jobs (a batch), fenced by their lease tokens. Each job keeps
-- its last `keep` lines in its log list; its 'lgn' field counts every line ever added, so a reader can
-- number lines stably while old ones are dropped.
-- @include common
--
-- KEYS[1] meta (hash; not read: named so that a Cluster runs the call on the queue's node)
-- ARGV[1] job key prefix  ARGV[2] lines kept per job  ARGV[3] number of jobs N; then per job: id, lease
--   token, line count M, then M pairs: time ms (0 = now), text (already cut to the line limit)
-- Returns: one code per job: 0 ok, -2 job not found, -3 lease not held (nothing stored)
local prefix, keep, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
local now = nil
local b = 4
for _ = 1, n do
  local id, token, m = ARGV[b], ARGV[b + 1], tonumber(ARGV[b + 2])
  local jkey = prefix .. id
  local code = lease_check(jkey, token)
  if code == 0 and m > 0 then
    local lines = {}
    for i = 0, m - 1 do
      local ms = ARGV[b + 3 + i * 2]
      if ms == '0' then
        now = now or now_ms()
        ms = now
      end
      lines[#lines + 1] = ms .. ' ' .. ARGV[b + 4 + i * 2]
    end
    local lkey = job_logs_key(prefix, id)
    redis.call('RPUSH', lkey, unpack(lines))
    redis.call('LTRIM', lkey, -keep, -1)
    redis.call('HINCRBY', jkey, 'lgn', m)
  end
  table.insert(out, code)
  b = b + 3 + m * 2
end
return out
