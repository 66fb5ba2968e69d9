-- redrive_done.lua: the last step of a redrive (engine/redrive.py) in the dead-letter queue: each copy's
-- outbox entry goes, once its original queue has the job back; or the copy is put back (its original queue
-- is gone): waiting again under its id with the data it had (new data the take recorded beside it is
-- dropped), unless a new copy holds that id by now (then the entry just goes).
-- An entry whose token is not the one given belongs to a later take of the same copy id and is left alone.
-- @include common
--
-- KEYS[1] redrive outbox (zset)  KEYS[2] waiting (lists)
-- ARGV[1] job key prefix  ARGV[2] outbox entry prefix  then groups of 3: copy id, token, "d" (done) or "r"
--   (put back)
-- Returns: the number of entries cleared
local outbox, waiting, prefix, entry_prefix = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local cleared = 0
for i = 3, #ARGV, 3 do
  local id, token, action = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local entry = entry_prefix .. id
  if redis.call('HGET', entry, 'rdt') == token then
    local jkey = prefix .. id
    if action == 'r' and redis.call('EXISTS', jkey) == 0 then
      redis.call('RENAME', entry, jkey)
      redis.call('HDEL', jkey, 'rdt', 'rdr', 'rdd', 'rdc', 'tok', 'fts')
      local f = redis.call('HMGET', jkey, 'pri', 'grp')
      place_waiting(waiting, jkey, id, f[1], false, nil, {}, nil, f[2])
    else
      redis.call('DEL', entry)
    end
    redis.call('ZREM', outbox, id)
    cleared = cleared + 1
  end
end
return cleared
