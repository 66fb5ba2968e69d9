-- list_workers.lua: the live entries of the worker registry (those whose expiry has not passed).
-- @include common
--
-- KEYS[1] index (zset: worker id -> entry expiry ms)
-- ARGV[1] key prefix of the entries (<prefix><worker id>)
-- Returns: {now, then per live worker: id, its fields as a flat list (field, value, …; see workers_seen.lua)}
local index, prefix = KEYS[1], ARGV[1]
local now = now_ms()
local out = {now}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', index, '(' .. string.format('%d', now), '+inf')) do
  local fields = redis.call('HGETALL', prefix .. id)
  if #fields > 0 then
    out[#out + 1] = id
    out[#out + 1] = fields
  end
end
return out
