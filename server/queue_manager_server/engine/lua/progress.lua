-- progress.lua: stores the progress of running jobs (a batch), fenced by their lease tokens.
--
-- ARGV[1] job key prefix  ARGV[2] number of jobs N; then N groups of: id, lease token, progress JSON
-- Returns: one code per job: 0 ok, -2 job not found, -3 lease not held
local prefix, n = ARGV[1], tonumber(ARGV[2])
local out = {}
for i = 0, n - 1 do
  local b = 2 + i * 3
  local jkey = prefix .. ARGV[b + 1]
  local f = redis.call('HMGET', jkey, 'st', 'tok')
  if not f[1] then
    table.insert(out, -2)
  elseif f[1] ~= 'active' or f[2] ~= ARGV[b + 2] then
    table.insert(out, -3)
  else
    redis.call('HSET', jkey, 'prog', ARGV[b + 3])
    table.insert(out, 0)
  end
end
return out
