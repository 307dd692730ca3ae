-- Delete a finished job's record and cancel flag (the TTL deletion of its Job; the caller removes the
-- job -> pools hint, in another slot),
-- only while it is still the run the caller saw finish: a record rerun since (another run,
-- lua/rerun.lua) or re-created (another uid) is left alone. A missing record: the rest goes.
--
-- KEYS[1] record   KEYS[2] cancel flag
-- ARGV[1] uid   ARGV[2] run
-- Returns 1 when deleted, 0 when left alone.
local rec = redis.call('HMGET', KEYS[1], 'uid', 'state', 'run')
if rec[1] then
  local finished = rec[2] == 'Succeeded' or rec[2] == 'Failed' or rec[2] == 'Cancelled'
  if rec[1] ~= ARGV[1] or (tonumber(rec[3]) or 0) ~= tonumber(ARGV[2]) or not finished then
    return 0
  end
end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
