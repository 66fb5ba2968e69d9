-- children_attach.lua: makes jobs that existed already the children of a running job in another call
-- (WaitForChildren with a child's own job_id or dedup key; services/children.py), a batch of one queue. An
-- unfinished job gets the parent appended to 'kup' (unless its 'par' or 'kup' names it already: a repeated
-- call attaches once) and a flow mark, so its end is handed to each parent it has (services/flows.py,
-- common.lua on_finished copies 'kup' into the flow entry). A finished job is answered with its outcome,
-- which the parent records at once; a job gone meanwhile is answered as missing (the caller adds it again).
-- @include common
--
-- KEYS[1] meta (hash)
-- ARGV[1] job key prefix; then per job 2 of: its id, its parent as an encoded Job holding one ParentJob
-- Returns: {1} then per job 5 of: 1 (attached, or attached before), 2 (finished), -2 (no such job); then
--   for a finished one its state, result, result content type and failure or cancel reason ('' otherwise)
--   as common.lua on_finished copies them into a flow entry; {-1} queue not registered
local meta, prefix = KEYS[1], ARGV[1]
if redis.call('EXISTS', meta) == 0 then return {-1} end
local out = {1}
for b = 2, #ARGV, 2 do
  local id, parent = ARGV[b], ARGV[b + 1]
  local jkey = prefix .. id
  local st, f = job_state(jkey, 'flo', 'par', 'kup', 'res', 'rct', 'err', 'cxm')
  if not st then
    out[#out + 1] = -2; out[#out + 1] = ''; out[#out + 1] = ''; out[#out + 1] = ''; out[#out + 1] = ''
  elseif st == 'completed' or st == 'failed' or st == 'cancelled' then
    local res = f[6] or (st == 'completed' and 'null' or '')
    local err = f[8] or ''
    if st == 'cancelled' and f[9] then err = f[9] end
    out[#out + 1] = 2; out[#out + 1] = st; out[#out + 1] = res
    out[#out + 1] = f[7] or (res ~= '' and JSON_TYPE or ''); out[#out + 1] = err
  else
    local par, kup = f[4] or '', f[5] or ''
    local w = {}
    if not string.find(par, parent, 1, true) and not string.find(kup, parent, 1, true) then
      w[1] = 'kup'; w[2] = kup .. parent
    end
    -- Its end is handed on; a chain's last link ('e') hands on its completion too now. A flow mark is one of
    -- the fields a plain job has none of (common.lua PLAIN).
    if f[3] ~= '1' then w[#w + 1] = 'flo'; w[#w + 1] = '1'; w[#w + 1] = 'p'; w[#w + 1] = NOT_PLAIN end
    if #w > 0 then redis.call('HSET', jkey, unpack(w)) end
    out[#out + 1] = 1; out[#out + 1] = ''; out[#out + 1] = ''; out[#out + 1] = ''; out[#out + 1] = ''
  end
end
return out
