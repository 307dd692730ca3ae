-- Apply a batch of a worker's writes in one call: ends of attempts (finish),
-- retries, hand-backs (requeue) and progress reports.
--
-- Each write is checked against the record's current delivery: the entry, and for the
-- end of an attempt (finish, retry) also that the record is Running that attempt. So a
-- worker whose lease was taken over cannot overwrite the new owner's state, and a write
-- sent again (its reply was lost) changes nothing the second time. Each write is applied
-- on its own: one that is malformed fails alone, before it has changed anything.
--
-- KEYS: the pool's job streams, highest priority first
-- ARGV[1] group: the consumer group
-- ARGV[2] now: unix seconds
-- ARGV[3] prefix: the pool's key prefix 'kw:{ns/pool}:'
-- ARGV[4] events: the pool's events stream 'kw:{ns/pool}:events'
-- ARGV[5] pointer_prefix: unused (the job->pools pointer is a hint the clients write, outside the scripts)
-- ARGV[6] result_ttl: seconds a finished record is kept
-- ARGV[7] worker: the worker (consumer) writing
-- ARGV[8] dead_letter_maxlen: entries the pool's dead-letter stream keeps, about (MAXLEN ~)
-- ARGV[9] writes: JSON list of writes, each with kind, stream (1-based index into KEYS),
-- entry, job_id and, by kind:
--   finish:   state, output, error, message, duration, ran, event, dead_letter_reason, attempt
--   retry:    due, error, message, event, attempt, duration
--   requeue:  message, uncount, owner
--   progress: progress, message, event
--   wait:     then, input, message, event, attempt, duration
--             (fan-out: the attempt ends Waiting for its children; then is the continuation
--             handler, input its JSON; see children.lua)
--   advance:  output, next, handler, step, index, max_attempts, message, duration, event, attempt
--             (a sequence's step, not its last, succeeded: output is kept as the record's
--             step_output:<index>, next (the next step's message JSON) becomes the record's msg
--             and a fresh entry on the same stream, attempts reset to 0, step the record's
--             StepRef JSON, max_attempts the next step's limit as text or '')
-- (output and error are JSON text or ''; event is JobEvent JSON without the output, which
-- is spliced in here so it crosses the wire once, or '' for a job no Job object stands behind
-- (an SDK job: protocol.is_sdk_job), whose events nobody reads and which are not written;
-- ran is false for a job that failed before any handler ran, which the duration statistics leave out (a retry's duration is '' then); dead_letter_reason '' = none;
-- due is unix seconds; uncount true gives the attempt back; owner is the consumer that must
-- hold the entry, usually ARGV[7])
-- Returns one result per write: 1 applied, 0 not applied (another delivery is current, or
-- this write was applied before); requeue returns the new entry id, '' when the job was
-- gone or finished, or 0 when the entry was not held; a write that cannot be applied
-- returns 'error: <why>'.
--! include children
--! include stats
local group, now, prefix, events = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ttl, worker = tonumber(ARGV[6]), ARGV[7]
local dlq_maxlen = ARGV[8]
local writes = cjson.decode(ARGV[9])
local results = {}
-- Pool counters, written once per batch.
local counts = {completed = 0, failed = 0, rejected = 0, cancelled = 0, dead_lettered = 0, retried = 0}
local duration = 0

local FIELDS = {
  finish = {state = 'string', output = 'string', error = 'string', message = 'string', duration = 'string',
    ran = 'boolean', event = 'string', dead_letter_reason = 'string', attempt = 'number'},
  retry = {due = 'string', error = 'string', message = 'string', event = 'string', attempt = 'number',
    duration = 'string'},
  requeue = {message = 'string', uncount = 'boolean', owner = 'string'},
  progress = {progress = 'string', message = 'string', event = 'string'},
  wait = {['then'] = 'string', input = 'string', message = 'string', event = 'string', attempt = 'number',
    duration = 'string'},
  advance = {output = 'string', ['next'] = 'string', handler = 'string', step = 'string', index = 'number',
    max_attempts = 'string', message = 'string', duration = 'string', event = 'string', attempt = 'number'},
}

-- The same as flat lists {name, type, name, type, ...}: a numeric loop over them is about twice
-- as fast as pairs() over the tables, and every write is checked.
local FIELD_LISTS = {}
for kind, fields in pairs(FIELDS) do
  local list = {}
  for name, t in pairs(fields) do
    list[#list + 1] = name
    list[#list + 1] = t
  end
  FIELD_LISTS[kind] = list
end

-- Why a write cannot be applied, or nil: checked before it changes anything. (type as a local:
-- a global is looked up in the script's globals on every use.)
local type = type

local function malformed(w)
  if type(w) ~= 'table' then
    return 'not an object'
  end
  local fields = FIELD_LISTS[w.kind]
  if not fields then
    return 'unknown kind ' .. tostring(w.kind)
  end
  if type(w.stream) ~= 'number' or not KEYS[w.stream] then
    return 'no stream ' .. tostring(w.stream)
  end
  if type(w.entry) ~= 'string' or type(w.job_id) ~= 'string' then
    return 'entry and job_id must be text'
  end
  for i = 1, #fields, 2 do
    local name, kind = fields[i], fields[i + 1]
    if type(w[name]) ~= kind then
      return name .. ' must be a ' .. kind .. ', not a ' .. type(w[name])
    end
  end
  return nil
end

-- Append an event the worker built ('' for an SDK job: none).
local function emit(text)
  if text ~= '' then
    redis.call('XADD', events, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'e', text)
  end
end

-- An event table as JSON, with the record's sequence step (StepRef JSON, '' or false for none)
-- spliced in as is.
local function with_step(event, step)
  local text = cjson.encode(event)
  if step and step ~= '' then
    text = string.sub(text, 1, -2) .. ', "step": ' .. step .. '}'
  end
  return text
end

-- Entries to acknowledge and delete, per stream: one XACK and one XDEL per stream at the end of
-- the call (flush_acks) instead of two commands per write. Nothing in between can tell: the call
-- is atomic, and a requeue in the same batch treats an entry already acknowledged as not held.
-- The first one is acknowledged at once, as every one was before: at maxmemory Redis refuses a
-- script's commands that may grow memory only until its first write, so an end of attempt or a
-- hand-back, whose first write is that XACK, is never refused (docs/reliability.md; a progress
-- report first in the batch is, and costs nothing: tests/integration/test_worker_out_of_memory.py).
local acks, acked = {}, {}  -- stream -> ids; stream -> {id -> true} (ids repeat across streams)
local acked_one = false

local function is_acked(stream, id)
  local ids = acked[stream]
  return ids ~= nil and ids[id] == true
end

local function ack(stream, id)
  local done = acked[stream]
  if not done then
    done = {}
    acked[stream] = done
  elseif done[id] then
    return
  end
  done[id] = true
  if not acked_one then
    acked_one = true
    redis.call('XACK', stream, group, id)
    redis.call('XDEL', stream, id)
    return
  end
  local ids = acks[stream]
  if not ids then
    ids = {}
    acks[stream] = ids
  end
  ids[#ids + 1] = id
end

local function flush_acks()
  for stream, ids in pairs(acks) do
    -- unpack() is bounded by Lua's C stack (about 8000 values): a batch is at most a few hundred.
    redis.call('XACK', stream, group, unpack(ids))
    redis.call('XDEL', stream, unpack(ids))
  end
end

-- The fields a settled attempt needs from its record, read in one HMGET: the fencing token, the
-- handler (statistics) and the fan-out links (children.lua's kw_job_finished).
local SETTLE_FIELDS = {'entry', 'state', 'attempts', 'handler', 'parent', 'parent_prefix', 'pool', 'children_total',
  'attempt_log', 'run', 'worker', 'started_at'}

-- args ('field', value, ...) for an HSET, with the attempt history's new text when there is one.
local function with_log(args, log_text)
  if log_text then
    args[#args + 1] = 'attempt_log'
    args[#args + 1] = log_text
  end
  return args
end

-- The entry of an ended attempt is acknowledged whatever happens; the record is written
-- only if it is still Running this very attempt of this delivery. Returns whether it is, the
-- record's SETTLE_FIELDS (rec[1]..rec[12]) and, when it is, the attempt history with this attempt
-- ended (jobindex.lua), for the caller's write (nil: no attempt open in it).
local function settle_attempt(w, stream, record)
  ack(stream, w.entry)
  local rec = redis.call('HMGET', record, unpack(SETTLE_FIELDS))
  local attempts = rec[1] == w.entry and tonumber(rec[3])  -- (tonumber only for the current entry)
  if attempts and rec[2] == 'Queued' and attempts == w.attempt - 1 then
    -- The take of this very delivery was lost: a failover promoted a replica that had the delivery
    -- (the blocking read's) but not the take that marked it Running. Nothing else leaves a record
    -- Queued on the entry it was enqueued with, so the attempt did run here: it is recorded as
    -- taken, and the write applies. (Before, the entry was acked and the job stayed Queued with
    -- no entry, run once and never finished.)
    redis.call('HSET', record, 'state', 'Running', 'attempts', w.attempt, 'worker', worker)
    rec[2], rec[3], attempts = 'Running', w.attempt, w.attempt
  end
  local current = attempts and rec[2] == 'Running' and attempts == w.attempt
  local log_text = nil
  if current then
    -- attempt history (jobindex.lua); a job's first attempt, as take.lua wrote it, is ended as text
    local first = rec[9] and rec[11] and rec[12] and
      kw_attempt_log_first(w.attempt, tonumber(rec[10]) or 0, rec[11], rec[12])
    log_text = kw_attempt_log_settled(rec[9], w, now, first)
  end
  return current, rec, log_text
end

-- What a finish tells kw_job_finished it read already (children.lua): filled in for each finish.
local known = {log_closed = true, prefix = prefix}

local function finish(w, stream, record)
  local current, rec, log_text = settle_attempt(w, stream, record)
  if not current then
    return 0
  end
  local seconds = kw_stats_finish(prefix, now, rec[4], w)  -- kubeworkers stats (stats.lua)
  local event = w.event
  if w.state == 'Succeeded' then
    if log_text then
      -- the hot path, without with_log's table of arguments
      redis.call('HSET', record, 'state', w.state, 'finished_at', now, 'updated_at', now,
        'output', w.output, 'error', w.error, 'message', w.message, 'progress', '1.0', 'attempt_log', log_text)
    else
      redis.call('HSET', record, 'state', w.state, 'finished_at', now, 'updated_at', now,
        'output', w.output, 'error', w.error, 'message', w.message, 'progress', '1.0')
    end
    if event ~= '' and w.output ~= '' and w.output ~= 'null' then
      event = string.sub(event, 1, -2) .. ', "output": ' .. w.output .. '}'
    end
  else
    redis.call('HSET', record, unpack(with_log({'state', w.state, 'finished_at', now, 'updated_at', now,
      'output', w.output, 'error', w.error, 'message', w.message}, log_text)))
  end
  redis.call('EXPIRE', record, ttl)
  emit(event)
  -- fan-out (children.lua), with the links read above (one table for every finish of the call)
  known.parent, known.parent_prefix, known.pool, known.job_id = rec[5], rec[6], rec[7], w.job_id
  known.children, known.handler = rec[8] ~= false, rec[4]
  kw_job_finished(record, w.state, now, ttl, known)
  if w.dead_letter_reason ~= '' then
    local dead = redis.call('XADD', prefix .. 'dlq', 'MAXLEN', '~', dlq_maxlen, '*', 'm',
      redis.call('HGET', record, 'msg') or '',
      'reason', w.dead_letter_reason, 'error', w.error, 'attempts', w.attempt, 'at', now, 'worker', worker)
    redis.call('HSET', record, 'dead_letter', dead)  -- so rerun.lua removes this entry
    counts.dead_lettered = counts.dead_lettered + 1
  end
  if w.state == 'Succeeded' then
    counts.completed = counts.completed + 1
    duration = duration + (seconds or tonumber(w.duration))
  elseif w.state == 'Failed' and w.ran then
    counts.failed = counts.failed + 1
    duration = duration + (seconds or tonumber(w.duration))
  elseif w.state == 'Failed' then
    counts.rejected = counts.rejected + 1
  else
    counts.cancelled = counts.cancelled + 1
  end
  return 1
end

local function retry(w, stream, record)
  local current, rec, log_text = settle_attempt(w, stream, record)
  if not current then
    return 0
  end
  redis.call('HSET', record, unpack(with_log({'state', 'Queued', 'updated_at', now, 'error', w.error,
    'message', w.message, 'entry', ''}, log_text)))
  redis.call('ZADD', prefix .. 'delayed', w.due, redis.call('HGET', record, 'msg'))
  kw_stats(prefix, now, rec[4], 'retried', w.duration)  -- kubeworkers stats (stats.lua)
  emit(w.event)
  counts.retried = counts.retried + 1
  return 1
end

local function requeue(w, stream, record)
  if is_acked(stream, w.entry) then
    return 0  -- acknowledged earlier in this call: no longer held
  end
  local pending = redis.call('XPENDING', stream, group, w.entry, w.entry, 1)
  if #pending == 0 or pending[1][2] ~= w.owner then
    return 0
  end
  local rec = redis.call('HMGET', record, 'state', 'entry', 'msg', 'attempts', 'uid', 'namespace', 'pool', 'handler',
    'step', 'run')
  ack(stream, w.entry)
  local state = rec[1]
  if not state or rec[2] ~= w.entry or state == 'Succeeded' or state == 'Failed' or state == 'Cancelled' then
    return ''
  end
  local new_id = redis.call('XADD', stream, '*', 'v', '1', 'm', rec[3], 'j', w.job_id, 'u', rec[5], 'h', rec[8])
  local attempts = tonumber(rec[4]) or 0
  if w.uncount and state == 'Running' and attempts > 0 then
    attempts = attempts - 1
  end
  redis.call('HSET', record, 'state', 'Queued', 'entry', new_id, 'attempts', attempts,
    'updated_at', now, 'message', w.message)
  if state == 'Running' then
    kw_attempt_settled(record, w, now)  -- attempt history (jobindex.lua)
  end
  if state == 'Running' and kw_has_job_object(w.job_id, rec[5]) then
    redis.call('XADD', events, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'e', with_step({job_id = w.job_id, uid = rec[5],
      namespace = rec[6], pool = rec[7], state = 'Queued', attempt = attempts, run = tonumber(rec[10]) or 0,
      worker = worker, at = tonumber(now), message = w.message}, rec[9]))
  end
  return new_id
end

local function progress(w, stream, record)
  local rec = redis.call('HMGET', record, 'entry', 'state')
  if rec[1] ~= w.entry or rec[2] ~= 'Running' then
    return 0
  end
  redis.call('HSET', record, 'progress', w.progress, 'message', w.message, 'updated_at', now)
  emit(w.event)
  return 1
end

-- Fan-out (children.lua): the attempt ends; the job waits for its children without a slot.
local function wait(w, stream, record)
  local current, rec, log_text = settle_attempt(w, stream, record)
  if not current then
    return 0
  end
  if log_text then
    redis.call('HSET', record, 'attempt_log', log_text)
  end
  emit(w.event)
  kw_stats(prefix, now, rec[4], 'waiting', w.duration)  -- kubeworkers stats (stats.lua)
  kw_wait(record, w['then'], w.input, now, w.message)
  return 1
end

-- Sequences (docs/workflows.md): the step succeeded and the next one is queued, in one step,
-- so a step's worker dying at any point reruns that step only.
local function advance(w, stream, record)
  local current, rec, log_text = settle_attempt(w, stream, record)
  if not current then
    return 0
  end
  kw_stats(prefix, now, rec[4], 'succeeded', w.duration)  -- kubeworkers stats (stats.lua): this step's handler
  local uid = redis.call('HGET', record, 'uid')
  local id = redis.call('XADD', stream, '*', 'v', '1', 'm', w['next'], 'j', w.job_id, 'u', uid, 'h', w.handler)
  kw_index_handler(record, rec[4], w.handler)  -- jobs index (jobindex.lua)
  redis.call('HSET', record, unpack(with_log({'step_output:' .. w.index, w.output, 'msg', w['next'],
    'handler', w.handler, 'step', w.step, 'state', 'Queued', 'attempts', 0, 'max_attempts', w.max_attempts,
    'entry', id, 'updated_at', now, 'message', w.message, 'progress', '', 'error', ''}, log_text)))
  emit(w.event)
  counts.completed = counts.completed + 1
  duration = duration + tonumber(w.duration)
  return 1
end

local APPLY = {finish = finish, retry = retry, requeue = requeue, progress = progress, wait = wait, advance = advance}

for i, w in ipairs(writes) do
  local problem = malformed(w)
  if problem then
    results[i] = 'error: ' .. problem
  else
    local ok, result = pcall(APPLY[w.kind], w, KEYS[w.stream], prefix .. 'job:' .. w.job_id)
    results[i] = ok and result or ('error: ' .. tostring(result))
  end
end
-- What the applied writes noted first (the records are written already), then the entries.
kw_index_flush()  -- jobindex.lua
kw_stats_flush()  -- stats.lua
flush_acks()
for name, n in pairs(counts) do
  if n > 0 then
    redis.call('HINCRBY', prefix .. 'stats', name, n)
  end
end
if duration > 0 then
  redis.call('HINCRBYFLOAT', prefix .. 'stats', 'duration_seconds_total', string.format('%.6f', duration))
end
return results
