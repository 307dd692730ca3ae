-- Record the end of an attempt: Succeeded, Failed (optionally dead-lettered) or Cancelled,
-- acknowledge and delete the stream entry, count it in the pool stats.
-- Only the holder of the current delivery may do so: if the job was handed to
-- another worker meanwhile (lease lost), the entry is just acknowledged.
--
-- KEYS[1] record   KEYS[2] events stream   KEYS[3] job stream   KEYS[4] pool stats
-- KEYS[5] job->pool pointer   KEYS[6] dead-letter stream
-- ARGV[1] entry id   ARGV[2] group   ARGV[3] state   ARGV[4] now   ARGV[5] result TTL
-- ARGV[6] output JSON ('' none)   ARGV[7] error JSON ('' none)   ARGV[8] message
-- ARGV[9] duration seconds   ARGV[10] event JSON   ARGV[11] dead-letter reason ('' = no)
-- ARGV[12] worker   ARGV[13] attempt
-- Returns 1 when recorded, 0 when the delivery was stale.
local id = ARGV[1]
redis.call('XACK', KEYS[3], ARGV[2], id)
redis.call('XDEL', KEYS[3], id)
if redis.call('HGET', KEYS[1], 'entry') ~= id then
  return 0
end
local state = ARGV[3]
local now = ARGV[4]
local ttl = tonumber(ARGV[5])
redis.call('HSET', KEYS[1], 'state', state, 'finished_at', now, 'updated_at', now,
  'output', ARGV[6], 'error', ARGV[7], 'message', ARGV[8])
if state == 'Succeeded' then
  redis.call('HSET', KEYS[1], 'progress', '1.0')
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[5], ttl)
redis.call('XADD', KEYS[2], '*', 'e', ARGV[10])
if ARGV[11] ~= '' then
  redis.call('XADD', KEYS[6], '*', 'm', redis.call('HGET', KEYS[1], 'msg') or '', 'reason', ARGV[11],
    'error', ARGV[7], 'attempts', ARGV[13], 'at', now, 'worker', ARGV[12])
  redis.call('HINCRBY', KEYS[4], 'dead_lettered', 1)
end
if state == 'Succeeded' then
  redis.call('HINCRBY', KEYS[4], 'completed', 1)
  redis.call('HINCRBYFLOAT', KEYS[4], 'duration_seconds_total', ARGV[9])
elseif state == 'Failed' then
  redis.call('HINCRBY', KEYS[4], 'failed', 1)
  redis.call('HINCRBYFLOAT', KEYS[4], 'duration_seconds_total', ARGV[9])
else
  redis.call('HINCRBY', KEYS[4], 'cancelled', 1)
end
return 1
