-- children_add.lua: records the children a running job adds (WaitForChildren), fenced by its lease, before
-- the server adds them to their queues (services/children.py) and parks the job (children_wait.lua). A child
-- without an id of its own gets one derived from the job, its wait number and its place in the call, so a
-- call repeated after its run was lost and ran again names the same children: they are recorded once and
-- added once. A child with its own job_id is recorded under that id (a job already a child, from this call or
-- an earlier wait, counts once). A child with a dedup key is recorded under a derived id too, until
-- children_link.lua records the job its add resolved the key to ('kd:<derived id>'); a repeated call is
-- answered that job. A repeated call drops the unfinished children of the first that it no longer names.
-- @include common
-- @include children
--
-- KEYS[1] meta (hash)
-- ARGV[1] job key prefix  ARGV[2] queue name  ARGV[3] job id  ARGV[4] lease token  ARGV[5] most children
--   per job; then per child, in order, 2 of: its queue, and '' (an id derived here), '#' and its dedup key,
--   or its own job id
-- Returns: {1, then per child its id and 0 (recorded), 1 (a dedup key to add under this derived id) or 2 (a
--   dedup key resolved before to this job: add nothing)}; {-1} queue not registered, {-2} job not found,
--   {-3} lease not held, {-4, n} the job has n children already and these would take it past the most,
--   {-5, i, queue} child i's own id names a child of the job in another queue, {-6, i} child i's dedup key
--   is held by the job itself
local meta = KEYS[1]
local prefix, queue, id, token, most = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
if redis.call('EXISTS', meta) == 0 then return {-1} end
local jkey = prefix .. id
local code, f = lease_check(jkey, token, 'kgn', 'kgg', 'kgc', 'kseq', 'kpb', 'par', 'evl', 'kgs')
if code ~= 0 then return {code} end
local wait = tonumber(f[3]) or 0
local n = (#ARGV - 5) / 2
local seq = tonumber(f[6]) or 0
local repeated = f[4] and tonumber(f[4]) == wait
local before = repeated and (tonumber(f[5]) or 0) or 0
-- The children recorded before this wait's first call: a repeated call prunes only what came after.
local round_start = repeated and (tonumber(f[10]) or 0) or seq
local function derived(i)
  return string.sub(redis.sha1hex(queue .. '\0' .. id .. '\0' .. wait .. '\0' .. i), 1, 24)
end

-- Read and check everything before the first write (a script does not roll back).
local plan, new = {}, 0
for i = 1, n do
  local cq, own = ARGV[4 + i * 2], ARGV[5 + i * 2]
  if string.sub(own, 1, 1) == '#' then
    -- A dedup key the job itself holds would make it wait for itself.
    if cq == queue and redis.call('GET', dedup_key(prefix, string.sub(own, 2))) == id then return {-6, i} end
    own = '#'
  end
  local cid = own
  if own == '' or own == '#' then cid = derived(i) end
  local field = 'k:' .. cid
  local v = redis.call('HGET', jkey, field)
  local vseq, vqueue, rest = nil, nil, nil
  if v then vseq, vqueue, rest = string.match(v, '^(%d+) (%S+)(.*)$') end
  local kd = own == '#' and redis.call('HGET', jkey, 'kd:' .. cid) or nil
  local resolved = kd and string.match(kd, '^%d+ (.+)$') or nil
  if own ~= '' and own ~= '#' and v and vqueue ~= cq then return {-5, i, vqueue} end
  if not resolved and not v then new = new + 1 end
  plan[i] = {cq = cq, own = own, cid = cid, field = field, v = v, vseq = vseq, vqueue = vqueue, rest = rest,
    resolved = resolved}
end
if seq + new > most then return {-4, seq} end

local out = {1}
local w = {'kgg', wait, 'kgc', n, 'kgs', round_start}
local named, recorded, pending = {}, {}, 0
for i = 1, n do
  local p = plan[i]
  if p.resolved then
    named[p.resolved] = true
    out[#out + 1] = p.resolved; out[#out + 1] = 2
  else
    -- A dedup child is recorded under the id derived for it until children_link.lua moves it to the job its
    -- key resolved to: should that be the job added under this id, its end counts even if it comes first.
    named[p.cid] = true
    out[#out + 1] = p.cid; out[#out + 1] = p.own == '#' and 1 or 0
    if not p.v and not recorded[p.cid] then
      recorded[p.cid] = true
      seq = seq + 1
      w[#w + 1] = p.field; w[#w + 1] = seq .. ' ' .. p.cq
      pending = pending + 1
    elseif (p.own == '' or p.own == '#') and p.rest == '' and p.vqueue ~= p.cq then
      -- Still running, in the queue the first call named: the child of this call is another job.
      w[#w + 1] = p.field; w[#w + 1] = p.vseq .. ' ' .. p.cq
    end
  end
end
if repeated then
  -- The first call's dedup resolutions at places this call has no dedup key at, and its unfinished children
  -- this call no longer names, are dropped.
  for i = 1, math.max(n, before) do
    if i > n or string.sub(ARGV[5 + i * 2], 1, 1) ~= '#' then redis.call('HDEL', jkey, 'kd:' .. derived(i)) end
  end
  local all = redis.call('HGETALL', jkey)
  for i = 1, #all, 2 do
    local cid = string.match(all[i], '^k:(.*)$')
    if cid and not named[cid] then
      local vseq, rest = string.match(all[i + 1], '^(%d+) %S+(.*)$')
      if vseq and rest == '' and tonumber(vseq) > round_start then
        redis.call('HDEL', jkey, all[i])
        pending = pending - 1
      end
    end
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
