-- obliterate.lua: deletes a queue and its jobs, a chunk per call; the caller repeats until done.
-- @include common
--
-- KEYS[1] meta  KEYS[2] waiting (base of the level lists; itself a sorted set only before migration)
-- KEYS[3] delayed  KEYS[4] active  KEYS[5] completed  KEYS[6] failed
-- KEYS[7] limiter  KEYS[8] dead-letter outbox  KEYS[9] bulk (hash: staged bulk streams)
-- KEYS[10] schedules  KEYS[11] schedule-due  KEYS[12] schedule-runs (the queue's schedules go with it)
-- KEYS[13] obliterating (hash: tok, the token of the run removing the queue; until, when its lease ends)
-- ARGV[1] job key prefix  ARGV[2] force (1 = even with active jobs)  ARGV[3] jobs per call
-- ARGV[4] key prefix of staged bulk streams (<prefix><stream id>)
-- ARGV[5] the reason a deleted unfinished job's waiting parents are given ('removed by ObliterateQueue')
-- ARGV[6] '1': the first call of an ObliterateQueue, which needs the queue; '0': a later call, or a call
--   finishing an obliterate a lost server left (its meta hash gone: Engine.finish_obliterate)
-- ARGV[7] the run's token  ARGV[8] its lease (ms): how long the name stays its own after this call
-- A run holds the name from its first call to its release (release_obliterate.lua): each call checks that
-- the token in KEYS[13] is its own, or takes the name when no run holds it (none, or its lease is over) and
-- the queue was not registered again; register_queue.lua refuses the name while KEYS[13] exists. So a call
-- never deletes a queue registered again, nor runs beside a live run that holds the name.
-- The cancelled set, the deadlines of active runs, the kept memory estimate, the redrive keys and the activity counters (stats, and the minute and
-- seconds hashes of the last two hours, which expire anyway) and the fairness groups' keys go too: keys derived
-- from the job prefix.
-- A first call on a queue whose job events are watched (its 'evw' deadline ahead) publishes 'x <queue>' on the
-- events channel: every server ends its WatchJobEvents calls of the queue with NOT_FOUND at once.
-- An unfinished job that parents wait for (WaitForChildren), or a chain link or workflow step not finished, ends
-- as removed (common.lua on_removed): its flow entry is queued on the queue's flow outbox, which this script
-- never deletes, nor the flow entries: the caller carries them out (services/flows.py) before it drops the
-- queue's name from the registry, so the janitor still visits the queue if the caller dies first. A plain job
-- (no flow mark) costs no command more.
-- Returns: {removed, done (1/0), hand-offs queued}, {-1} when a first call finds no queue, {-4} when jobs are
--   active and force is 0, {-5} when a later call finds the queue registered again, or {-6} when another
--   run holds the name (nothing done by any of these)
local prefix, force, chunk, how = ARGV[1], ARGV[2] == '1', tonumber(ARGV[3]), ARGV[5]
local mark, token, now = KEYS[13], ARGV[7], now_ms()
if ARGV[6] == '1' then
  if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
elseif redis.call('HGET', mark, 'tok') ~= token then
  if redis.call('EXISTS', KEYS[1]) == 1 then return {-5} end
  if (tonumber(redis.call('HGET', mark, 'until')) or 0) > now then return {-6} end
end
if not force and redis.call('ZCARD', KEYS[4]) > 0 then return {-4} end
redis.call('HSET', mark, 'tok', token, 'until', now + tonumber(ARGV[8]))
-- Bulk streams still staged into the queue are dropped with it.
for _, sid in ipairs(redis.call('HKEYS', KEYS[9])) do redis.call('UNLINK', ARGV[4] .. sid) end
if redis.call('EXISTS', KEYS[1]) == 1 then
  -- First call: a queue registered again under this name starts its counts afresh.
  redis.call('DEL', queue_key(prefix, 'stats'))
  local evw = tonumber(redis.call('HGET', KEYS[1], 'evw'))
  if evw and evw > now then
    local base, queue = string.match(prefix, '^(.*):{(.*)}:job:$')
    redis.call('PUBLISH', base .. ':events', 'x ' .. queue)
  end
  local minute = math.floor(now / 60000)
  for i = minute - 121, minute do
    local m = string.format('%d', i)
    redis.call('DEL', queue_key(prefix, 'm:' .. m), queue_key(prefix, 's:' .. m))
  end
end
-- The queue stops existing first, so no job can be added while the rest is deleted.
redis.call('DEL', KEYS[1], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12])
redis.call('DEL', queue_key(prefix, 'deadlines'), queue_key(prefix, 'memory'))
-- A dead-letter queue's redrive outbox (its entries are whole copies) and the tokens of redrives carried out
-- (engine/redrive.py).
local redrive = queue_key(prefix, 'redrive')
for _, id in ipairs(redis.call('ZRANGE', redrive, 0, -1)) do redis.call('DEL', redrive .. ':' .. id) end
redis.call('DEL', redrive, queue_key(prefix, 'redriven'))
local removed = delete_waiting(KEYS[2], prefix, chunk, how)
for k = 2, 6 do
  if removed < chunk then
    removed = removed + delete_jobs(KEYS[k], prefix, redis.call('ZRANGE', KEYS[k], 0, chunk - removed - 1),
      k <= 4, k <= 4 and how or nil)
  end
end
local cancelled = queue_key(prefix, 'cancelled')
if removed < chunk then
  removed = removed + delete_jobs(cancelled, prefix, redis.call('ZRANGE', cancelled, 0, chunk - removed - 1))
end
-- The fairness groups' rotation, limits and counts (common.lua); their waiting lists went with the jobs. The
-- deletes above may have counted into the meta hash again: it goes last.
local base = string.sub(prefix, 1, -5)
redis.call('DEL', base .. 'gring', base .. 'gdelay', base .. 'gpark', base .. 'gact', base .. 'glimits',
  base .. 'gtok', base .. 'groups', base .. 'expiring', base .. 'gpaused',
  base .. 'gpuntil', base .. 'gpman', base .. 'gpwin', base .. 'gwin', base .. 'gwnext', base .. 'gwb')
if removed < chunk then
  redis.call('DEL', base .. 'gwaiting', KEYS[1])
  return {removed, 1, REMOVED.handed}
end
redis.call('DEL', KEYS[1])
return {removed, 0, REMOVED.handed}
