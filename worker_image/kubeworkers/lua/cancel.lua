-- Cancel a job. A queued job becomes Cancelled at once (the worker that later
-- reads its entry skips it); a running job gets the cancel flag plus a pub/sub
-- message and its worker cancels the handler and records Cancelled.
--
-- KEYS[1] record   KEYS[2] cancel flag   KEYS[3] the pool's events stream
-- ARGV[1] now   ARGV[2] cancel channel   ARGV[3] result TTL seconds
-- Returns 1 when a cancellation was recorded, 0 when the job is unknown or finished.
-- A Waiting parent (fan-out) is cancelled at once like a queued job; its children are
-- cancelled by the caller (kubeworkers.queue.cancel), its own parent is told (children.lua).
--! include children
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return 0
end
if state == 'Succeeded' or state == 'Failed' or state == 'Cancelled' then
  return 0
end
local ttl = tonumber(ARGV[3])
redis.call('SET', KEYS[2], '1', 'EX', ttl)
if state == 'Queued' or state == 'Pending' or state == 'Waiting' then
  redis.call('HSET', KEYS[1], 'state', 'Cancelled', 'finished_at', ARGV[1], 'updated_at', ARGV[1],
    'message', 'cancelled while queued', 'cancel_requested', '1')
  redis.call('EXPIRE', KEYS[1], ttl)
  local r = redis.call('HMGET', KEYS[1], 'job_id', 'uid', 'namespace', 'pool', 'attempts', 'run')
  local event = cjson.encode({
    job_id = r[1], uid = r[2], namespace = r[3], pool = r[4], state = 'Cancelled',
    attempt = tonumber(r[5]) or 0, run = tonumber(r[6]) or 0, at = tonumber(ARGV[1]), message = 'cancelled while queued',
  })
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'e', event)
  kw_job_finished(KEYS[1], 'Cancelled', ARGV[1], ttl)  -- fan-out (children.lua)
  kw_index_flush()  -- jobindex.lua
else
  redis.call('HSET', KEYS[1], 'cancel_requested', '1', 'updated_at', ARGV[1])
end
redis.call('PUBLISH', ARGV[2], KEYS[1])
return 1
