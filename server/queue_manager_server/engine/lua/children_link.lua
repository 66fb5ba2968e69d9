-- children_link.lua: records the children a running job added with a dedup key (WaitForChildren), once their
-- adds said which job each key resolves to: the job added under the id children_add.lua derived, or the
-- key's holder, in the place children_add.lua kept for it ('kd:<derived id>' holding its seq). Fenced by
-- the run's lease. The resolution is kept there too ('<seq> <id>'), so a call repeated after a lost run is
-- answered the same job (children_add.lua) even if the key has been freed since; a job that is a child of
-- the job already (named twice, or in an earlier wait) counts once.
-- @include common
--
-- KEYS[1] meta (hash)
-- ARGV[1] job key prefix  ARGV[2] job id  ARGV[3] lease token; then per child 3 of: the id children_add.lua
--   derived for it, its queue, the id of the job its key resolved to
-- Returns: {1}; {-1} queue not registered, {-2} job not found, {-3} lease not held, {-5, i, queue} the
--   job child i resolved to has the id of a child of the job in another queue (nothing was written)
local meta = KEYS[1]
local prefix, id, token = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', meta) == 0 then return {-1} end
local jkey = prefix .. id
local code, f = lease_check(jkey, token, 'kseq')
if code ~= 0 then return {code} end
-- Read and check everything before the first write (a script does not roll back).
local todo = {}
for b = 4, #ARGV, 3 do
  local cid, cq, rid = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local kd = redis.call('HGET', jkey, 'kd:' .. cid)
  if not (kd and string.find(kd, ' ', 1, true)) then
    local v = redis.call('HGET', jkey, 'k:' .. rid)
    local vqueue = v and string.match(v, '^%d+ (%S+)')
    if vqueue and vqueue ~= cq then return {-5, (b - 1) / 3, vqueue} end
    todo[#todo + 1] = {cid, cq, rid, v, tonumber(kd)}
  end
end
local seq, pending, w, seen = tonumber(f[3]) or 0, 0, {}, {}
for _, t in ipairs(todo) do
  local cid, cq, rid, v, place = t[1], t[2], t[3], t[4], t[5]
  if not place then seq = seq + 1; place = seq end
  w[#w + 1] = 'kd:' .. cid; w[#w + 1] = place .. ' ' .. rid
  if not v and not seen[rid] then
    -- In the place children_add.lua kept for it; a job that is a child already keeps its own place.
    seen[rid] = true
    pending = pending + 1
    w[#w + 1] = 'k:' .. rid; w[#w + 1] = place .. ' ' .. cq
  end
end
if #w > 0 then
  w[#w + 1] = 'kseq'; w[#w + 1] = seq
  redis.call('HSET', jkey, unpack(w))
end
if pending ~= 0 then redis.call('HINCRBY', jkey, 'kpn', pending) end
return {1}
