-- Decide whether a delivered entry runs, and if so mark the job Running.
--
-- KEYS[1] record   KEYS[2] cancel flag   KEYS[3] events stream   KEYS[4] job stream
-- KEYS[5] dead-letter stream   KEYS[6] pool stats   KEYS[7] job->pool pointer
-- ARGV[1] entry id   ARGV[2] uid   ARGV[3] worker   ARGV[4] now   ARGV[5] default max attempts
-- ARGV[6] group   ARGV[7] result TTL seconds
-- Returns {verdict, attempt, max_attempts}; verdict is one of
--   run        the worker runs attempt `attempt`
--   gone       no record (deleted): entry dropped
--   stale      the record belongs to another incarnation (uid): entry dropped
--   done       the job already finished: entry dropped
--   cancelled  the job was cancelled before it started: recorded, entry dropped
--   dead       every allowed attempt was lost with its worker: dead-lettered
local id = ARGV[1]
local now = ARGV[4]
local ttl = tonumber(ARGV[7])
local function drop()
  redis.call('XACK', KEYS[4], ARGV[6], id)
  redis.call('XDEL', KEYS[4], id)
end
local function event(state, attempt, message, err)
  local r = redis.call('HMGET', KEYS[1], 'job_id', 'uid', 'namespace', 'pool')
  local e = {job_id = r[1], uid = r[2], namespace = r[3], pool = r[4], state = state,
    attempt = attempt, worker = ARGV[3], at = tonumber(now), message = message}
  if err then
    e['error'] = err
  end
  redis.call('XADD', KEYS[3], '*', 'e', cjson.encode(e))
end
local rec = redis.call('HMGET', KEYS[1], 'uid', 'state', 'attempts', 'max_attempts')
if not rec[1] then
  drop()
  return {'gone', 0, 0}
end
if rec[1] ~= ARGV[2] then
  drop()
  return {'stale', 0, 0}
end
local state = rec[2]
local attempts = tonumber(rec[3]) or 0
local max = tonumber(rec[4]) or tonumber(ARGV[5])
if state == 'Succeeded' or state == 'Failed' or state == 'Cancelled' then
  drop()
  return {'done', attempts, max}
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  local message = 'cancelled before it started'
  redis.call('HSET', KEYS[1], 'state', 'Cancelled', 'finished_at', now, 'updated_at', now, 'message', message)
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[7], ttl)
  event('Cancelled', attempts, message, nil)
  redis.call('HINCRBY', KEYS[6], 'cancelled', 1)
  drop()
  return {'cancelled', attempts, max}
end
if attempts >= max then
  local err = {type = 'WorkerLost', retryable = false,
    message = 'the worker running attempt ' .. attempts .. ' of ' .. max .. ' stopped without finishing it'}
  local err_json = cjson.encode(err)
  redis.call('XADD', KEYS[5], '*', 'm', redis.call('HGET', KEYS[1], 'msg') or '', 'reason', err.message,
    'error', err_json, 'attempts', attempts, 'at', now, 'worker', ARGV[3])
  redis.call('HSET', KEYS[1], 'state', 'Failed', 'finished_at', now, 'updated_at', now,
    'error', err_json, 'message', err.message)
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[7], ttl)
  event('Failed', attempts, err.message, err)
  redis.call('HINCRBY', KEYS[6], 'failed', 1)
  redis.call('HINCRBY', KEYS[6], 'dead_lettered', 1)
  drop()
  return {'dead', attempts, max}
end
attempts = attempts + 1
redis.call('HSET', KEYS[1], 'state', 'Running', 'attempts', attempts, 'max_attempts', max,
  'worker', ARGV[3], 'started_at', now, 'updated_at', now, 'entry', id, 'progress', '', 'message', '')
event('Running', attempts, nil, nil)
return {'run', attempts, max}
