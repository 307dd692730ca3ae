-- Idempotent enqueue of a batch of messages for one pool: for each, write the
-- job record (state Queued) and XADD the message to its priority stream,
-- unless this (job_id, uid) is already known.
--
-- ARGV[1] now   ARGV[2] pool key prefix 'kw:{ns/pool}:'   ARGV[3] job->pool pointer prefix 'kw:{ns}:jobpool:'
-- ARGV[4] pool name   ARGV[5..] message JSON (protocol.JobMessage), one per job
-- Returns one integer per message: 1 enqueued, 0 already enqueued (same uid, or
-- a different uid whose job has not finished yet).
-- Keys are derived from the prefixes (all within the pool's hash tag, except the
-- job->pool pointer), so one call can carry a thousand jobs.
local now, prefix, pointer_prefix, pool = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local results = {}
local enqueued = 0
for i = 5, #ARGV do
  local raw = ARGV[i]
  local msg = cjson.decode(raw)
  local job_id, uid = msg['job_id'], msg['uid']
  local record = prefix .. 'job:' .. job_id
  local result = 1
  local existing = redis.call('HGET', record, 'uid')
  if existing then
    if existing == uid then
      result = 0
    else
      local state = redis.call('HGET', record, 'state')
      if state ~= 'Succeeded' and state ~= 'Failed' and state ~= 'Cancelled' then
        result = 0
      else
        -- A new incarnation of a finished job id (e.g. a Job CR deleted and created again).
        redis.call('DEL', record, prefix .. 'cancel:' .. job_id)
      end
    end
  end
  if result == 1 then
    local priority = msg['priority'] or 'normal'
    local max_attempts = msg['max_attempts']
    if max_attempts == nil or max_attempts == cjson.null then
      max_attempts = ''
    end
    local id = redis.call('XADD', prefix .. 'jobs:' .. priority, '*', 'v', '1', 'm', raw,
      'j', job_id, 'u', uid, 'h', msg['handler'])
    redis.call('HSET', record,
      'job_id', job_id, 'uid', uid, 'namespace', msg['namespace'], 'pool', msg['pool'],
      'handler', msg['handler'], 'priority', priority, 'state', 'Queued', 'attempts', '0',
      'max_attempts', max_attempts, 'entry', id, 'enqueued_at', string.format('%.6f', msg['enqueued_at'] or 0),
      'updated_at', now, 'msg', raw)
    redis.call('SET', pointer_prefix .. job_id, pool)
    enqueued = enqueued + 1
  end
  results[#results + 1] = result
end
if enqueued > 0 then
  redis.call('HINCRBY', prefix .. 'stats', 'enqueued', enqueued)
end
return results
