-- release_obliterate.lua: an obliterate run whose calls found nothing more to delete, and whose hand-offs are
-- carried out, gives up the name it held (obliterate.lua), so the queue can be registered again. A run that
-- lost the name (its lease ran out and another run took it over) leaves the other's hold alone.
--
-- KEYS[1] obliterating (hash: tok, until)
-- ARGV[1] the run's token
-- Returns: 1 released, 0 the name was not held by this run
if redis.call('HGET', KEYS[1], 'tok') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
