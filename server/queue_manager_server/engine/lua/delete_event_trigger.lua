-- delete_event_trigger.lua: deletes an event trigger (DeleteEventTrigger) and raises the triggers' version
-- (see upsert_event_trigger.lua). The jobs it added stay.
--
-- KEYS[1] triggers (hash: id -> encoded EventTrigger)  KEYS[2] the triggers' version (string)
-- ARGV[1] trigger id
-- Returns: the definition it deleted, or false when there was none of that id
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('INCR', KEYS[2])
return old
