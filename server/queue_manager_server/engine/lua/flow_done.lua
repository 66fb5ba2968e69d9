-- flow_done.lua: clears flow hand-offs the server has carried out (see services/flows.py), a batch of jobs
-- of one queue, and records on each job, if it still exists, the children it started.
--
-- KEYS[1] flow outbox (list); then per job: its flow entry (hash), the job (hash)
-- ARGV per job: job id, children (an encoded Job holding only children; "" for none), the entry's state as
--   carried out. An entry whose state changed meanwhile (the job was retried, or retried and finished
--   again: requeue.lua flow_retried) is kept: its own place in the outbox carries it out.
-- Returns: the number of jobs
local n = #ARGV / 3
for i = 1, n do
  local id, children, state = ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i]
  local entry, job = KEYS[2 * i], KEYS[2 * i + 1]
  redis.call('LREM', KEYS[1], 1, id)
  if redis.call('HGET', entry, 'st') == state then redis.call('DEL', entry) end
  if children ~= '' and redis.call('EXISTS', job) == 1 then redis.call('HSET', job, 'chd', children) end
end
return n
