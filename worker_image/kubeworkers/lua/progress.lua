-- Record a running job's progress, if this delivery is still the current one.
--
-- KEYS[1] record   KEYS[2] events stream
-- ARGV[1] entry id   ARGV[2] fraction   ARGV[3] message   ARGV[4] now   ARGV[5] event JSON
local rec = redis.call('HMGET', KEYS[1], 'entry', 'state')
if rec[1] ~= ARGV[1] or rec[2] ~= 'Running' then
  return 0
end
redis.call('HSET', KEYS[1], 'progress', ARGV[2], 'message', ARGV[3], 'updated_at', ARGV[4])
redis.call('XADD', KEYS[2], '*', 'e', ARGV[5])
return 1
