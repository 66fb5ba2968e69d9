-- extend.lua: extends the leases of running jobs (a batch), fenced by their lease tokens.
-- @include common
--
-- KEYS[1] active (zset)
-- ARGV[1] job key prefix  ARGV[2] lease ms  ARGV[3] number of jobs N; then N groups of: id, lease token
-- Returns: {now, then per job: code, new expiry}: 0 ok, 1 ok but a cancel was asked (the server tells
--   the worker again: the backstop for a missed cancel event), -2 job not found, -3 lease not held
local active = KEYS[1]
local prefix, lease, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local out = {now}
for i = 0, n - 1 do
  local id, token = ARGV[4 + i * 2], ARGV[5 + i * 2]
  local jkey = prefix .. id
  local code, f = lease_check(jkey, token, 'cxr')
  if code ~= 0 then
    table.insert(out, code); table.insert(out, -1)
  else
    redis.call('ZADD', active, now + lease, id)  -- the lease expiry lives in the active set's score only
    if f[3] == '1' then table.insert(out, 1) else table.insert(out, 0) end
    table.insert(out, now + lease)
  end
end
return out
