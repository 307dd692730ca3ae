-- Idempotent enqueue: write the job record (state Queued) and XADD the message,
-- unless this (job_id, uid) is already known.
--
-- KEYS[1] record   KEYS[2] priority stream   KEYS[3] job->pool pointer
-- KEYS[4] cancel flag   KEYS[5] pool stats
-- ARGV[1] uid   ARGV[2] message JSON   ARGV[3] job_id   ARGV[4] namespace
-- ARGV[5] pool  ARGV[6] handler   ARGV[7] priority   ARGV[8] enqueued_at
-- ARGV[9] max_attempts ('' = handler default)   ARGV[10] now
-- Returns 1 when enqueued, 0 when it was already enqueued (same uid, or a
-- different uid whose job has not finished yet).
local existing = redis.call('HGET', KEYS[1], 'uid')
if existing then
  if existing == ARGV[1] then
    return 0
  end
  local state = redis.call('HGET', KEYS[1], 'state')
  if state ~= 'Succeeded' and state ~= 'Failed' and state ~= 'Cancelled' then
    return 0
  end
  -- A new incarnation of a finished job id (e.g. a Job CR deleted and created again).
  redis.call('DEL', KEYS[1], KEYS[4])
end
local id = redis.call('XADD', KEYS[2], '*', 'v', '1', 'm', ARGV[2])
redis.call('HSET', KEYS[1],
  'job_id', ARGV[3], 'uid', ARGV[1], 'namespace', ARGV[4], 'pool', ARGV[5],
  'handler', ARGV[6], 'priority', ARGV[7], 'state', 'Queued', 'attempts', '0',
  'max_attempts', ARGV[9], 'entry', id, 'enqueued_at', ARGV[8], 'updated_at', ARGV[10],
  'msg', ARGV[2])
redis.call('SET', KEYS[3], ARGV[5])
redis.call('HINCRBY', KEYS[5], 'enqueued', 1)
return 1
