-- release.lua: hands leased jobs back (a batch). Unstarted jobs (stalled = 0) return to waiting as if
-- never claimed; jobs of a lost worker (stalled = 1) count a stall and may fail past their limit.
-- @include common
-- @include stats
--
-- KEYS[1] meta (hash)  KEYS[2] active (zset)  KEYS[3] waiting (lists)  KEYS[4] failed (zset)
-- KEYS[5] dead-letter outbox (list)
-- ARGV[1] job key prefix  ARGV[2] stalled (1/0)  ARGV[3] number of jobs N; then N groups of: id, token
-- A job whose cancel was asked while it ran ends cancelled instead of going back (either mode).
-- Returns: {now, then one code per job}: 1 back to waiting, 2 failed for good, 3 cancelled, -2 not found,
--   -3 lease not held. Failures for good (stall limit) count in the queue's activity (stats.lua).
local meta, active, waiting, failed, outbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, stalled, n = ARGV[1], ARGV[2] == '1', tonumber(ARGV[3])
local now = now_ms()
local out = {now}
local gone, fronts, stalls = {}, {}, 0
-- Last item first: each job handed back goes to the head of its level, so they end up in the order given.
-- Per job one read and one write; the active set, the pushes to each level and the stall count once.
for i = n - 1, 0, -1 do
  local id, token = ARGV[4 + i * 2], ARGV[5 + i * 2]
  local jkey = prefix .. id
  local code, f = lease_check(jkey, token, 'cxr', 'to', 'pri', 'wt', 'grp')
  if code ~= 0 then
    out[i + 2] = code
  else
    watch_settings(meta, now)
    gone[#gone + 1] = id
    if stalled then
      local r = recover_stalled(meta, waiting, failed, outbox, prefix, id, now, fronts,
        'run lost: its worker went away or gave it up unfinished')
      if r == 1 or r == 2 then stalls = stalls + 1 end
      out[i + 2] = r
    elseif f[3] == '1' then
      run_ended(prefix, id, f[4], f[7])
      finish_cancelled(meta, prefix, id, now)
      out[i + 2] = 3
    else
      run_ended(prefix, id, f[4], f[7])
      if EVENTS then job_event(prefix, id, 2) end
      place_waiting(waiting, jkey, id, f[5], true, f[6], {}, fronts, f[7])
      out[i + 2] = 1
    end
  end
end
push_waiting(fronts, 'LPUSH')
zrem_all(active, gone)
if stalls > 0 then redis.call('HINCRBY', meta, 'stalled_total', stalls) end
if #gone > 0 then slot_freed(meta, prefix) end
write_stats(prefix, now)
publish_events(prefix, now)
return out
