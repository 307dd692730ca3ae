-- Fail a job whose record can never finish: it is Queued or Running, unchanged for at least
-- the given age, and nothing in Redis can run it any more (its stream entry is gone, a Running
-- job's entry is held by no worker, a waiting retry is not in the delayed set). It becomes
-- Failed (JobLost, not retryable) with an event and a dead-letter entry, so it can be replayed;
-- nothing else would ever finish or expire it. Everything is checked again here, atomically.
--
-- KEYS[1] record   KEYS[2] delayed set   KEYS[3] the pool's events stream
-- KEYS[4] dead-letter stream   KEYS[5..8] critical, high, normal, low streams   KEYS[9] pool stats
-- ARGV[1] now: unix seconds   ARGV[2] min_age: seconds unchanged   ARGV[3] result_ttl
-- ARGV[4] group: the workers' consumer group
-- Returns 1 when the job was failed, 0 when it was left alone.
--! include children
local rec = redis.call('HMGET', KEYS[1], 'state', 'updated_at', 'entry', 'priority', 'msg',
  'job_id', 'uid', 'namespace', 'pool', 'attempts', 'run')
local state = rec[1]
if state ~= 'Queued' and state ~= 'Running' then
  return 0
end
local now = tonumber(ARGV[1])
if now - (tonumber(rec[2]) or 0) < tonumber(ARGV[2]) then
  return 0
end
local entry, msg = rec[3] or '', rec[5] or ''
local streams = {critical = KEYS[5], high = KEYS[6], normal = KEYS[7], low = KEYS[8]}
local stream = streams[rec[4] or 'normal'] or KEYS[7]
if entry == '' then
  if state == 'Queued' and redis.call('ZSCORE', KEYS[2], msg) then
    return 0  -- a retry waiting out its backoff
  end
elseif #redis.call('XRANGE', stream, entry, entry) > 0 then
  if state == 'Queued' then
    return 0
  end
  local ok, held = pcall(redis.call, 'XPENDING', stream, ARGV[4], entry, entry, 1)
  if ok and #held > 0 then
    return 0  -- a worker holds it (or the reaper will hand it out again)
  end
end
local message = 'the job was ' .. state .. ' for over ' .. ARGV[2] ..
  ' s with no stream entry a worker could run; failed so that it is not kept for ever' ..
  ' (replay it from the dead-letter stream)'
local err = cjson.encode({type = 'JobLost', message = message, retryable = false})
redis.call('HSET', KEYS[1], 'state', 'Failed', 'finished_at', ARGV[1], 'updated_at', ARGV[1],
  'message', message, 'error', err)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
kw_job_finished(KEYS[1], 'Failed', ARGV[1], tonumber(ARGV[3]))  -- fan-out (children.lua)
kw_index_flush()  -- jobindex.lua
redis.call('XADD', KEYS[3], 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'e', cjson.encode({
  job_id = rec[6], uid = rec[7], namespace = rec[8], pool = rec[9], state = 'Failed',
  attempt = tonumber(rec[10]) or 0, run = tonumber(rec[11]) or 0, at = now, message = message, error = cjson.decode(err)}))
local dead = redis.call('XADD', KEYS[4], '*', 'm', msg, 'reason', message, 'error', err, 'attempts', rec[10] or '0',
  'at', ARGV[1], 'worker', '')
redis.call('HSET', KEYS[1], 'dead_letter', dead)  -- so rerun.lua removes this entry
-- Not 'failed': no run of known duration ended (as for WorkerLost in take.lua).
redis.call('HINCRBY', KEYS[9], 'rejected', 1)
redis.call('HINCRBY', KEYS[9], 'dead_lettered', 1)
return 1
