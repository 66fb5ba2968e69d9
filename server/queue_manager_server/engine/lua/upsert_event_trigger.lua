-- upsert_event_trigger.lua: stores an event trigger's definition (UpsertEventTrigger), creating it or
-- replacing the one of that id, and raises the triggers' version so that a push planned on the triggers as
-- they were writes nothing and plans again (push_event.lua).
--
-- KEYS[1] triggers (hash: id -> encoded EventTrigger)  KEYS[2] the triggers' version (string)
-- ARGV[1] trigger id  ARGV[2] the encoded definition  ARGV[3] most triggers
-- Returns: 1 created, 0 replaced, -1 too many triggers (nothing written)
local triggers, version = KEYS[1], KEYS[2]
local id, definition, most = ARGV[1], ARGV[2], tonumber(ARGV[3])
local created = redis.call('HEXISTS', triggers, id) == 0
if created and redis.call('HLEN', triggers) >= most then return -1 end
redis.call('HSET', triggers, id, definition)
redis.call('INCR', version)
if created then return 1 end
return 0
