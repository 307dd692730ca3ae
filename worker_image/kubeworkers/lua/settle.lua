-- Apply a batch of a worker's writes in one call: ends of attempts (finish),
-- retries, hand-backs (requeue) and progress reports.
--
-- Each write is checked against the record's current delivery ('entry'): a
-- worker whose lease was taken over cannot overwrite the new owner's state.
--
-- KEYS: the pool's job streams, highest priority first
-- ARGV[1] group   ARGV[2] now   ARGV[3] pool key prefix 'kw:{ns/pool}:'   ARGV[4] events stream
-- ARGV[5] job->pool pointer prefix 'kw:{ns}:jobpool:'   ARGV[6] result TTL   ARGV[7] worker
-- ARGV[8] JSON list of writes; each has k (kind), s (stream index), e (entry id), j (job id) and:
--   finish:   st state, o output JSON, er error JSON, m message, d duration, ev event JSON,
--             dl dead-letter reason ('' = none), a attempt
--   retry:    due (unix seconds), er, m, ev
--   requeue:  m message, u '1' to uncount the attempt (the entry must be held by ARGV[7])
--   progress: p fraction, m, ev
-- Returns one result per write: 1 applied, 0 stale delivery; requeue returns the
-- new entry id, '' when the job was gone or finished, or 0 when not held.
local group, now, prefix, events = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local pointer_prefix, ttl, worker = ARGV[5], tonumber(ARGV[6]), ARGV[7]
local writes = cjson.decode(ARGV[8])
local results = {}
-- Pool counters, written once per batch.
local counts = {completed = 0, failed = 0, cancelled = 0, dead_lettered = 0, retried = 0}
local duration = 0

local function ack(stream, id)
  redis.call('XACK', stream, group, id)
  redis.call('XDEL', stream, id)
end

local function finish(w, stream, record)
  ack(stream, w.e)
  if redis.call('HGET', record, 'entry') ~= w.e then
    return 0
  end
  if w.st == 'Succeeded' then
    redis.call('HSET', record, 'state', w.st, 'finished_at', now, 'updated_at', now,
      'output', w.o, 'error', w.er, 'message', w.m, 'progress', '1.0')
  else
    redis.call('HSET', record, 'state', w.st, 'finished_at', now, 'updated_at', now,
      'output', w.o, 'error', w.er, 'message', w.m)
  end
  redis.call('EXPIRE', record, ttl)
  redis.call('EXPIRE', pointer_prefix .. w.j, ttl)
  redis.call('XADD', events, '*', 'e', w.ev)
  if w.dl ~= '' then
    redis.call('XADD', prefix .. 'dlq', '*', 'm', redis.call('HGET', record, 'msg') or '', 'reason', w.dl,
      'error', w.er, 'attempts', w.a, 'at', now, 'worker', worker)
    counts.dead_lettered = counts.dead_lettered + 1
  end
  if w.st == 'Succeeded' then
    counts.completed = counts.completed + 1
    duration = duration + tonumber(w.d)
  elseif w.st == 'Failed' then
    counts.failed = counts.failed + 1
    duration = duration + tonumber(w.d)
  else
    counts.cancelled = counts.cancelled + 1
  end
  return 1
end

local function retry(w, stream, record)
  ack(stream, w.e)
  if redis.call('HGET', record, 'entry') ~= w.e then
    return 0
  end
  redis.call('HSET', record, 'state', 'Queued', 'updated_at', now, 'error', w.er, 'message', w.m, 'entry', '')
  redis.call('ZADD', prefix .. 'delayed', w.due, redis.call('HGET', record, 'msg'))
  redis.call('XADD', events, '*', 'e', w.ev)
  counts.retried = counts.retried + 1
  return 1
end

local function requeue(w, stream, record)
  local pending = redis.call('XPENDING', stream, group, w.e, w.e, 1)
  if #pending == 0 or pending[1][2] ~= worker then
    return 0
  end
  local rec = redis.call('HMGET', record, 'state', 'entry', 'msg', 'attempts', 'uid', 'namespace', 'pool', 'handler')
  ack(stream, w.e)
  local state = rec[1]
  if not state or rec[2] ~= w.e or state == 'Succeeded' or state == 'Failed' or state == 'Cancelled' then
    return ''
  end
  local new_id = redis.call('XADD', stream, '*', 'v', '1', 'm', rec[3], 'j', w.j, 'u', rec[5], 'h', rec[8])
  local attempts = tonumber(rec[4]) or 0
  if w.u == '1' and state == 'Running' and attempts > 0 then
    attempts = attempts - 1
  end
  redis.call('HSET', record, 'state', 'Queued', 'entry', new_id, 'attempts', attempts,
    'updated_at', now, 'message', w.m)
  if state == 'Running' then
    redis.call('XADD', events, '*', 'e', cjson.encode({job_id = w.j, uid = rec[5], namespace = rec[6],
      pool = rec[7], state = 'Queued', attempt = attempts, worker = worker, at = tonumber(now), message = w.m}))
  end
  return new_id
end

local function progress(w, record)
  local rec = redis.call('HMGET', record, 'entry', 'state')
  if rec[1] ~= w.e or rec[2] ~= 'Running' then
    return 0
  end
  redis.call('HSET', record, 'progress', w.p, 'message', w.m, 'updated_at', now)
  redis.call('XADD', events, '*', 'e', w.ev)
  return 1
end

for i, w in ipairs(writes) do
  local stream = KEYS[w.s]
  local record = prefix .. 'job:' .. w.j
  if w.k == 'finish' then
    results[i] = finish(w, stream, record)
  elseif w.k == 'retry' then
    results[i] = retry(w, stream, record)
  elseif w.k == 'requeue' then
    results[i] = requeue(w, stream, record)
  elseif w.k == 'progress' then
    results[i] = progress(w, record)
  else
    results[i] = 0
  end
end
for name, n in pairs(counts) do
  if n > 0 then
    redis.call('HINCRBY', prefix .. 'stats', name, n)
  end
end
if duration > 0 then
  redis.call('HINCRBYFLOAT', prefix .. 'stats', 'duration_seconds_total', string.format('%.6f', duration))
end
return results
