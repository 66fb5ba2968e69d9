-- flow_done.lua: clears flow hand-offs the server has carried out (see services/flows.py), a batch of jobs
-- of one queue, and records on each job, if it still exists, the children it started.
--
-- KEYS[1] flow outbox (list); then per job: its flow entry (hash), the job (hash)
-- ARGV per job: job id, children (an encoded Job holding only children; "" for none)
-- Returns: the number of jobs
local n = #ARGV / 2
for i = 1, n do
  local id, children = ARGV[2 * i - 1], ARGV[2 * i]
  local entry, job = KEYS[2 * i], KEYS[2 * i + 1]
  redis.call('LREM', KEYS[1], 1, id)
  redis.call('DEL', entry)
  if children ~= '' and redis.call('EXISTS', job) == 1 then redis.call('HSET', job, 'chd', children) end
end
return n
