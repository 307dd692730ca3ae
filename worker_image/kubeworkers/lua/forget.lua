-- Delete a finished job's record, cancel flag and pool pointer (the TTL deletion of its Job),
-- only while it is still the run the caller saw finish: a record rerun since (another run,
-- lua/rerun.lua) or re-created (another uid) is left alone. A missing record: the rest goes.
--
-- KEYS[1] record   KEYS[2] cancel flag   KEYS[3] legacy job->pool string   KEYS[4] job->pools set
-- ARGV[1] uid   ARGV[2] run   ARGV[3] pool name
-- Returns 1 when deleted, 0 when left alone.
local rec = redis.call('HMGET', KEYS[1], 'uid', 'state', 'run')
if rec[1] then
  local finished = rec[2] == 'Succeeded' or rec[2] == 'Failed' or rec[2] == 'Cancelled'
  if rec[1] ~= ARGV[1] or (tonumber(rec[3]) or 0) ~= tonumber(ARGV[2]) or not finished then
    return 0
  end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('SREM', KEYS[4], ARGV[3])
return 1
