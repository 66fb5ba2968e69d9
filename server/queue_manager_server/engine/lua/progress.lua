-- progress.lua: stores the progress of running jobs (a batch), fenced by their lease tokens.
-- @include common
--
-- KEYS[1] meta (hash; read only for the job events' watch deadline, common.lua watched, when a progress is
-- stored)
-- ARGV[1] job key prefix  ARGV[2] number of jobs N; then N groups of: id, lease token, progress JSON
-- Returns: one code per job: 0 ok, -2 job not found, -3 lease not held
local prefix, n = ARGV[1], tonumber(ARGV[2])
local out = {}
local now = false
for i = 0, n - 1 do
  local b = 2 + i * 3
  local jkey = prefix .. ARGV[b + 1]
  local code = lease_check(jkey, ARGV[b + 2])
  if code ~= 0 then
    table.insert(out, code)
  else
    redis.call('HSET', jkey, 'prog', ARGV[b + 3])
    if not now then
      now = now_ms()
      watch_settings(KEYS[1], now)
    end
    -- A progress too long for an event is left out of it (GetJob shows it).
    local prog = ARGV[b + 3]
    if EVENTS then job_event(prefix, ARGV[b + 1], 4, nil, nil, #prog <= EV_PROGRESS and prog or '') end
    table.insert(out, 0)
  end
end
if now then publish_events(prefix, now) end
return out
