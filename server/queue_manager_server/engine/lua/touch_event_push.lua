-- touch_event_push.lua: on a Redis Cluster, marks a push still being carried out by its server: the push's
-- time in the pushes to carry out becomes now, so the janitor of another server, which carries out the
-- pushes recorded longer ago than REPLAY_AFTER_MS (services/event_pushes.py), leaves a long push to its own
-- server while that server goes on round after round, and joins it only once it stopped. A push carried out
-- meanwhile (taken off the pushes) stays off.
-- @include common
--
-- KEYS[1] the pushes to carry out (zset: push id -> ms of its record or its server's last round)
-- ARGV[1] the push's id
-- Returns: 1 marked, 0 the push was carried out meanwhile
local pushes = KEYS[1]
if not redis.call('ZSCORE', pushes, ARGV[1]) then return 0 end
redis.call('ZADD', pushes, 'XX', now_ms(), ARGV[1])
return 1
