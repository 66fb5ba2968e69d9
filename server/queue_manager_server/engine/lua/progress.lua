-- progress.lua: stores the progress of running jobs (a batch), fenced by their lease tokens.
-- @include common
--
-- KEYS[1] meta (hash; not read: named so that a Cluster runs the call on the queue's node)
-- ARGV[1] job key prefix  ARGV[2] number of jobs N; then N groups of: id, lease token, progress JSON
-- Returns: one code per job: 0 ok, -2 job not found, -3 lease not held
local prefix, n = ARGV[1], tonumber(ARGV[2])
local out = {}
for i = 0, n - 1 do
  local b = 2 + i * 3
  local jkey = prefix .. ARGV[b + 1]
  local code = lease_check(jkey, ARGV[b + 2])
  if code ~= 0 then
    table.insert(out, code)
  else
    redis.call('HSET', jkey, 'prog', ARGV[b + 3])
    table.insert(out, 0)
  end
end
return out
