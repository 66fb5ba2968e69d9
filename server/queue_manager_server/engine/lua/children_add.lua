-- children_add.lua: records the children a running job adds (WaitForChildren), fenced by its lease, before
-- the server adds them to their queues (services/children.py) and parks the job (children_wait.lua). Each
-- child's id is derived from the job, its wait number and the child's place in the call, so a call repeated
-- after its run was lost and ran again names the same children: they are recorded once and added once. A
-- repeated call that names fewer children than the first drops the unfinished ones it no longer names.
-- @include common
-- @include children
--
-- KEYS[1] meta (hash)
-- ARGV[1] job key prefix  ARGV[2] queue name  ARGV[3] job id  ARGV[4] lease token  ARGV[5] most children
--   per job; ARGV[6..] the children's queues, in order
-- Returns: {1, child ids...}; {-1} queue not registered, {-2} job not found, {-3} lease not held, {-4, n}
--   the job has n children already and these would take it past the most
local meta = KEYS[1]
local prefix, queue, id, token, most = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
if redis.call('EXISTS', meta) == 0 then return {-1} end
local jkey = prefix .. id
local code, f = lease_check(jkey, token, 'kgn', 'kgg', 'kgc', 'kseq', 'kpb', 'par', 'evl')
if code ~= 0 then return {code} end
local wait = tonumber(f[3]) or 0
local n = #ARGV - 5
local before = 0
if f[4] and tonumber(f[4]) == wait then before = tonumber(f[5]) or 0 end
local seq = tonumber(f[6]) or 0
if seq + math.max(n - before, 0) > most then return {-4, seq} end
local out = {1}
local w = {'kgg', wait, 'kgc', n}
local pending = 0
for i = 1, math.max(n, before) do
  local cid = string.sub(redis.sha1hex(queue .. '\0' .. id .. '\0' .. wait .. '\0' .. i), 1, 24)
  local field = 'k:' .. cid
  local v = redis.call('HGET', jkey, field)
  local vseq, vqueue, rest = nil, nil, nil
  if v then vseq, vqueue, rest = string.match(v, '^(%d+) (%S+)(.*)$') end
  if i <= n then
    local cq = ARGV[5 + i]
    out[#out + 1] = cid
    if not v then
      seq = seq + 1
      w[#w + 1] = field; w[#w + 1] = seq .. ' ' .. cq
      pending = pending + 1
    elseif rest == '' and vqueue ~= cq then
      -- Still running, in the queue the first call named: the child of this call is another job.
      w[#w + 1] = field; w[#w + 1] = vseq .. ' ' .. cq
    end
  elseif v and rest == '' then
    redis.call('HDEL', jkey, field)
    pending = pending - 1
  end
end
w[#w + 1] = 'kseq'; w[#w + 1] = seq
-- 'par' without what an external event wait appended (includes/external_events.lua evl): not the job's own.
if not f[7] then
  local par = f[8] or ''
  w[#w + 1] = 'kpb'; w[#w + 1] = string.sub(par, 1, #par - (tonumber(f[9]) or 0))
end
redis.call('HSET', jkey, unpack(w))
if pending ~= 0 then redis.call('HINCRBY', jkey, 'kpn', pending) end
return out
