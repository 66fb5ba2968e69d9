-- chain_failed.lua: records on a chain's first job why the chain stopped (a later link failed for good,
-- was cancelled, or could not be added). Nothing happens if that job no longer exists.
--
-- KEYS[1] the chain's first job (hash)
-- ARGV[1] the reason
-- Returns: 1 when recorded, 0 when the job is gone
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'cfl', ARGV[1])
return 1
