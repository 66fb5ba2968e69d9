-- size_room.lua: whether a bulk add's jobs all fit under a queue's size limits (QueueConfig.max_size, a
-- group's max_size: includes/add.lua size_limits), checked whole before any is written (an AddBulk is added
-- whole or not at all). Every job counts, delayed ones against their group too.
-- @include common
-- @include add
--
-- KEYS[1] meta (hash)  KEYS[2] waiting (lists)  KEYS[3] delayed (zset)
-- ARGV[1] jobs in the add  ARGV[2..] group, jobs of that group in the add
-- Returns: {0} room for all, {-1, '', held, max_size, jobs of the add} the queue would be over its max_size,
--   {-2, group, held, max_size, jobs of the add in it} that group would be over its own, {-3} no queue
local meta, waiting, delayed = KEYS[1], KEYS[2], KEYS[3]
local d = add_defaults(meta)
if not d[12] then return {-3} end
local lim = size_limits(d)
if not lim then return {0} end
local counts = {}
for i = 2, #ARGV, 2 do counts[ARGV[i]] = tonumber(ARGV[i + 1]) end
local full, grp, held, cap, adding = lim.fits(waiting, delayed, tonumber(ARGV[1]), counts)
if full then return {full == 'q' and -1 or -2, grp, held, cap, adding} end
return {0}
