-- remove_job.lua: deletes one job that is not active, with its log lines; releases its dedup key. An
-- unfinished job that parents wait for (WaitForChildren) ends for them as removed (common.lua on_removed).
-- @include common
--
-- KEYS[1] waiting (lists)  KEYS[2] delayed  KEYS[3] completed  KEYS[4] failed
-- ARGV[1] job key prefix  ARGV[2] job id
-- (a cancelled job leaves the cancelled set, derived from the job prefix, as is the meta hash its job events
-- are looked up in: common.lua watched)
-- Returns: {state the job was in, 1 when a flow hand-off was queued (else 0)} or {-2} not found, {-4} job is
--   active
local jkey = ARGV[1] .. ARGV[2]
local st, f = job_state(jkey, 'ddk', 'ddt', 'wt', 'pri', 'grp', 'ewk', 'flo')
if not st then return {-2} end
if st == 'active' then return {-4} end
if f[8] then event_wait_drop(ARGV[1], ARGV[2], f[8]) end
-- A key held until the job finishes is free once it is removed; a ttl'd key holds for its window.
if f[3] and not f[4] then release_dedup(ARGV[1], ARGV[2], f[3]) end
notify_job(ARGV[1], ARGV[2], jkey, 'removed', f[5])
local now = now_ms()
watch_settings(queue_key(ARGV[1], 'meta'), now)
if EVENTS then job_event(ARGV[1], ARGV[2], 11) end
local sets = {delayed = KEYS[2], completed = KEYS[3], failed = KEYS[4],
  cancelled = queue_key(ARGV[1], 'cancelled')}
if st == 'waiting' then
  remove_waiting(KEYS[1], f[6], ARGV[2], f[7])
elseif sets[st] then
  redis.call('ZREM', sets[st], ARGV[2])
end
local handed = 0
if st ~= 'completed' and st ~= 'failed' and st ~= 'cancelled' then
  handed = on_removed(ARGV[1], ARGV[2], jkey, f[9], 'removed by RemoveJob')
end
redis.call('DEL', jkey, job_logs_key(ARGV[1], ARGV[2]))
publish_events(ARGV[1], now)
return {st, handed}
