-- children_waits.lua: what jobs of one queue wait for (WaitForChildren), read only: services/children.py walks
-- it from the jobs a running job names as its children, queue by queue, to refuse a child that already waits
-- (through any number of further children) for the job itself, which would leave both parked for ever. A job
-- waits for the children recorded on it that have not finished ('k:<child id>' holding '<seq> <queue>' with
-- no outcome: includes/children.lua) while it has any ('kpn' above 0) and has not finished itself.
-- @include common
--
-- KEYS[1] meta (hash; names the queue's hash slot)
-- ARGV[1] job key prefix; then per job one of: its id, or '#' and a dedup key (the job holding that key)
-- Returns: per job, its id ('' for no such job, or a key no job holds), the number n of children it waits
--   for, then n pairs of their queue and id
local prefix = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  if string.sub(id, 1, 1) == '#' then id = redis.call('GET', dedup_key(prefix, string.sub(id, 2))) or '' end
  local st, f = nil, {}
  if id ~= '' then st, f = job_state(prefix .. id, 'kpn') end
  out[#out + 1] = st and id or ''
  local at = #out + 1
  out[at] = 0
  if st and st ~= 'completed' and st ~= 'failed' and st ~= 'cancelled' and (tonumber(f[3]) or 0) > 0 then
    local all = redis.call('HGETALL', prefix .. id)
    for j = 1, #all, 2 do
      local cid = string.match(all[j], '^k:(.*)$')
      local cq = cid and string.match(all[j + 1], '^%d+ (%S+)$')
      if cq then
        out[#out + 1] = cq; out[#out + 1] = cid
        out[at] = out[at] + 1
      end
    end
  end
end
return out
