-- list_groups.lua: a page of a queue's fairness groups (common.lua 'groups', by name) with their counts and
-- limits, in one atomic read.
--
-- KEYS[1] meta (hash; the groups' keys are derived from it)
-- ARGV[1] the name of the last group the page before listed ('' from the first: no group name is empty);
--   the page goes on strictly after it by name (ZRANGEBYLEX: the groups all score 0), wherever groups came
--   or went meanwhile  ARGV[2] page size
-- Returns: {-1} when the queue is not registered, else {groups known, the queue's group limits
--   "concurrency rate-max rate-ms max-size burst", then per group: name, waiting, active, its own limits (same
--   form; "" for none), paused (1/0), resume at (ms; "" for none: set_group_paused.lua), the end of the
--   maintenance window holding it (ms; ""), its next window's start (ms; ""), its windows (serialized; "":
--   set_group_window.lua)}
local meta = KEYS[1]
local d = redis.call('HMGET', meta, 'created', 'g_conc', 'g_rl_max', 'g_rl_ms', 'g_max', 'g_rl_burst')
if not d[1] then return {-1} end
local base = string.sub(meta, 1, -5)
local after, size = ARGV[1], tonumber(ARGV[2])
local out = {redis.call('ZCARD', base .. 'groups'),
  (d[2] or '0') .. ' ' .. (d[3] or '0') .. ' ' .. (d[4] or '0') .. ' ' .. (d[5] or '0') .. ' ' .. (d[6] or '0')}
local from = '-'
if after ~= '' then from = '(' .. after end
local names = redis.call('ZRANGEBYLEX', base .. 'groups', from, '+', 'LIMIT', 0, size)
if #names == 0 then return out end
local w = redis.call('HMGET', base .. 'gwaiting', unpack(names))
local a = redis.call('HMGET', base .. 'gact', unpack(names))
local l = redis.call('HMGET', base .. 'glimits', unpack(names))
local p = redis.call('HMGET', base .. 'gpaused', unpack(names))
local wu = redis.call('HMGET', base .. 'gpwin', unpack(names))
local wn = redis.call('HMGET', base .. 'gwnext', unpack(names))
local wl = redis.call('HMGET', base .. 'gwin', unpack(names))
-- The groups' resume times, looked up only when some group has one (ZSCORE: the commands a least-privilege
-- user may run, security.py, have no ZMSCORE).
local timed = redis.call('ZCARD', base .. 'gpuntil') > 0
for i, grp in ipairs(names) do
  out[#out + 1] = grp
  out[#out + 1] = tonumber(w[i]) or 0
  out[#out + 1] = math.max(tonumber(a[i]) or 0, 0)
  out[#out + 1] = l[i] or ''
  out[#out + 1] = p[i] and 1 or 0
  out[#out + 1] = timed and redis.call('ZSCORE', base .. 'gpuntil', grp) or ''
  out[#out + 1] = wu[i] or ''
  out[#out + 1] = wn[i] or ''
  out[#out + 1] = wl[i] or ''
end
return out
