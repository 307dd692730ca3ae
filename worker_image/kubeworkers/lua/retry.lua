-- A failed attempt that may be retried: back to Queued, parked in the delayed
-- set until its backoff has passed, stream entry acknowledged and deleted.
--
-- KEYS[1] record   KEYS[2] events stream   KEYS[3] job stream   KEYS[4] delayed set
-- KEYS[5] pool stats
-- ARGV[1] entry id   ARGV[2] group   ARGV[3] now   ARGV[4] due (unix seconds)
-- ARGV[5] error JSON   ARGV[6] message   ARGV[7] event JSON
-- Returns 1 when parked, 0 when the delivery was stale.
local id = ARGV[1]
redis.call('XACK', KEYS[3], ARGV[2], id)
redis.call('XDEL', KEYS[3], id)
if redis.call('HGET', KEYS[1], 'entry') ~= id then
  return 0
end
local msg = redis.call('HGET', KEYS[1], 'msg')
redis.call('HSET', KEYS[1], 'state', 'Queued', 'updated_at', ARGV[3], 'error', ARGV[5],
  'message', ARGV[6], 'entry', '')
redis.call('ZADD', KEYS[4], ARGV[4], msg)
redis.call('XADD', KEYS[2], '*', 'e', ARGV[7])
redis.call('HINCRBY', KEYS[5], 'retried', 1)
return 1
