-- children_link.lua: records which job the dedup key of each child a running job added resolved to
-- (WaitForChildren), once their adds said so, fenced by the run's lease. children_add.lua recorded each such
-- child under the id it derived (the id its job was added under when the key was free); a key that resolved
-- to its holder instead moves the record to the holder, in the same place in the order. A derived job that
-- has finished already stays the child (it was added under that id by an earlier call). The resolution is
-- kept ('kd:<derived id>' holding '<seq> <id>'), so a call repeated after a lost run is answered the same job
-- (children_add.lua) even if the key has been freed since; a job that is a child of the job already (named
-- twice, or in an earlier wait) counts once.
-- @include common
--
-- KEYS[1] meta (hash)
-- ARGV[1] job key prefix  ARGV[2] job id  ARGV[3] lease token; then per child 3 of: the id children_add.lua
--   derived for it, its queue, the id of the job its key resolved to
-- Returns: {1, then per child the id of the job it is}; {-1} queue not registered, {-2} job not found, {-3}
--   lease not held, {-5, i, queue} the job child i resolved to has the id of a child of the job in another
--   queue (nothing was written)
local meta = KEYS[1]
local prefix, id, token = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', meta) == 0 then return {-1} end
local jkey = prefix .. id
local code, f = lease_check(jkey, token, 'kseq')
if code ~= 0 then return {code} end
-- Read and check everything before the first write (a script does not roll back).
local plan = {}
for b = 4, #ARGV, 3 do
  local cid, cq, rid = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local kd = redis.call('HGET', jkey, 'kd:' .. cid)
  local done = kd and string.match(kd, '^%d+ (.+)$')
  local v = redis.call('HGET', jkey, 'k:' .. cid)
  local vseq, rest = nil, nil
  if v then vseq, rest = string.match(v, '^(%d+) %S+(.*)$') end
  if not done and v and rest ~= '' then rid = cid end  -- finished under the derived id: that job it is
  local r = (not done and rid ~= cid) and redis.call('HGET', jkey, 'k:' .. rid) or nil
  local rqueue = r and string.match(r, '^%d+ (%S+)')
  if rqueue and rqueue ~= cq then return {-5, (b - 1) / 3, rqueue} end
  plan[#plan + 1] = {cid = cid, cq = cq, rid = done or rid, done = done, v = v, vseq = vseq, r = r}
end
local seq, pending, w, out, recorded = tonumber(f[3]) or 0, 0, {}, {1}, {}
for _, p in ipairs(plan) do
  out[#out + 1] = p.rid
  if not p.done then
    local place = p.vseq
    if not place then seq = seq + 1; place = seq end
    if p.rid == p.cid then
      if not p.v then w[#w + 1] = 'k:' .. p.cid; w[#w + 1] = place .. ' ' .. p.cq; pending = pending + 1 end
    else
      -- The holder takes the derived id's place (or counts once, when it is a child already).
      if p.v then redis.call('HDEL', jkey, 'k:' .. p.cid); pending = pending - 1 end
      if not p.r and not recorded[p.rid] then
        recorded[p.rid] = true
        w[#w + 1] = 'k:' .. p.rid; w[#w + 1] = place .. ' ' .. p.cq
        pending = pending + 1
      end
    end
    w[#w + 1] = 'kd:' .. p.cid; w[#w + 1] = place .. ' ' .. p.rid
  end
end
if #w > 0 then
  w[#w + 1] = 'kseq'; w[#w + 1] = seq
  redis.call('HSET', jkey, unpack(w))
end
if pending ~= 0 then redis.call('HINCRBY', jkey, 'kpn', pending) end
return out
