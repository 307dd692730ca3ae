-- Take jobs for a worker: deliver entries through the consumer group and decide,
-- per entry, whether it runs; runnable jobs are marked Running in the same call.
--
-- Mode 'read' reads up to COUNT new entries strictly in priority order (critical, high,
-- then normal, then low); it never blocks. An idle worker sends it right behind a blocking
-- XREAD from the ids this script returned when it last read every stream to its end (ARGV[8]
-- wake): Redis runs the take as soon as the read returns, in the same round trip. Mode 'given'
-- decides entries the worker already has pending (a take whose reply was lost: see below).
--
-- Priority aging (aging_ms > 0): an entry that has waited aging_ms on its stream (by its id's
-- time) ranks one level higher, one more level per further aging_ms, up to the top; among
-- entries of one rank the oldest goes first. Mode 'read' then takes from the stream whose next
-- undelivered entry ranks first, as many as rank before the next stream's, until COUNT are read.
-- So a low job waits at most about 3 x aging_ms behind a steady stream of higher ones.
--
-- Idempotent for the worker that took a job: an entry whose record is already Running
-- for this very delivery and worker (a take whose reply was lost, passed again in mode
-- 'given') runs without counting another attempt.
--
-- KEYS: the pool's job streams, highest priority first
-- ARGV[1] mode: 'read' | 'given'
-- ARGV[2] group: the consumer group
-- ARGV[3] consumer: the worker taking the jobs
-- ARGV[4] count: most entries to read (mode 'read')
-- ARGV[5] now: unix seconds, or '' for Redis' clock (a take sent behind a blocking read runs when it returns)
-- ARGV[6] prefix: the pool's key prefix 'kw:{ns/pool}:'
-- ARGV[7] events: the pool's events stream 'kw:{ns/pool}:events'
-- ARGV[8] wake: '1' (mode 'read'): after the entries, one more item: the ids to block from
-- ARGV[9] result_ttl: seconds a finished record is kept
-- ARGV[10] default_max_attempts: attempts of a job whose handler is unknown here
-- ARGV[11] handler_max_attempts: JSON {handler: max attempts}
-- ARGV[12] handler_free: JSON {handler: free slots} of the handlers with a concurrency limit
-- ARGV[13] dead_letter_maxlen: entries the pool's dead-letter stream keeps, about (MAXLEN ~)
-- ARGV[14] aging_ms: priority aging period, milliseconds (0: strict priority order)
-- ARGV[15..] given: mode 'given', per entry: stream, entry, message, job_id, uid, handler
-- (stream is the 1-based index into KEYS; job id, uid and handler are also stream fields
-- j, u, h, so reading needs no JSON decoding; entries without them are decoded)
--
-- Returns a flat list, per entry: stream, entry, job_id, uid, handler, message, verdict, attempt, max_attempts
-- With wake '1' it ends with one more item: when the call read every stream to its end, the
-- group's last delivered id of each stream (KEYS order; '0-0' for a stream not there), so an
-- XREAD BLOCK from them returns at the first entry no worker was handed yet; else an empty list.
-- Verdicts:
--   run        the worker runs attempt `attempt` (record now Running)
--   gone       no record (deleted): entry dropped
--   stale      the record belongs to another incarnation (uid): entry dropped
--   duplicate  the record's current delivery is another entry: this one dropped
--   done       the job already finished: entry dropped
--   cancelled  cancelled before it (again) started: recorded Cancelled, entry dropped
--   dead       every allowed attempt was lost with its worker: dead-lettered
--   bad        unreadable message: entry dropped
--   deferred   its handler is at its concurrency limit here: handed back to the end of its
--              stream (a fresh entry, still Queued, attempt uncounted) for any worker to take
--   undelivered  (mode 'given') the entry is not pending for this worker on this server: the
--              read that returned it reached another master (a Sentinel failover fell between
--              the worker's read of its pending entries and this call), or another worker holds it. Nothing is
--              changed: the entry stays for this master's own delivery, which decides it then.
--              (Marking it Running here would let this master deliver it again later, to this
--              worker as its own Running delivery, and the job would run twice under one attempt.)
--! include children
local group, consumer, now = ARGV[2], ARGV[3], ARGV[5]
if now == '' then
  local t = redis.call('TIME')
  now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end
local prefix, events = ARGV[6], ARGV[7]
local ttl = tonumber(ARGV[9])
local default_max = tonumber(ARGV[10])
local handler_max = cjson.decode(ARGV[11])
local handler_free = cjson.decode(ARGV[12])
local dlq_maxlen = ARGV[13]
local aging_ms = tonumber(ARGV[14]) or 0
local out = {}
-- The end of every Running event: the same for every job of this call (see kw_json_time).
local running_tail = ', "state": "Running", "worker": ' .. cjson.encode(consumer) .. ', "at": ' .. kw_json_time(now)

local function finished(state)
  return state == 'Succeeded' or state == 'Failed' or state == 'Cancelled'
end

-- The per-entry steps of decide(), defined once (not as closures per entry).
local function drop(stream, id)
  redis.call('XACK', stream, group, id)
  redis.call('XDEL', stream, id)
end

-- Events are written only for jobs a Job object stands behind (kw_has_job_object, in the prelude):
-- the operator copies them to the object's status and has nothing to copy an SDK job's to.
local function event(job_id, uid, rec, state, attempt, message, err, run)
  if not kw_has_job_object(job_id, uid) then
    return
  end
  if state == 'Running' then
    -- The hot path, as text: the same JSON as below (message and error are nil then; run is
    -- the record's, converted by the caller).
    local step = rec[9]
    local job_json = cjson.encode(job_id)
    local uid_json = cjson.encode(uid)
    redis.call('XADD', events, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'e', '{"job_id": ' .. job_json ..
      ', "uid": ' .. uid_json .. ', "namespace": ' .. kw_json_str(rec[5]) .. ', "pool": ' ..
      kw_json_str(rec[6]) .. ', "attempt": ' .. kw_json_int(attempt) .. ', "run": ' ..
      kw_json_int(run) .. running_tail ..
      (step and step ~= '' and ', "step": ' .. step or '') .. '}')  -- a sequence's StepRef, as recorded
    return
  end
  local e = {job_id = job_id, uid = uid, namespace = rec[5], pool = rec[6],
    state = state, attempt = attempt, run = tonumber(rec[10]) or 0, worker = consumer, at = tonumber(now),
    message = message, error = err}
  local text = cjson.encode(e)
  if rec[9] and rec[9] ~= '' then
    text = string.sub(text, 1, -2) .. ', "step": ' .. rec[9] .. '}'  -- a sequence's StepRef, as recorded
  end
  redis.call('XADD', events, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'e', text)
end

local function close(record, state, message, err_json)
  redis.call('HSET', record, 'state', state, 'finished_at', now, 'updated_at', now, 'message', message)
  if err_json then
    redis.call('HSET', record, 'error', err_json)
  end
  redis.call('EXPIRE', record, ttl)
  kw_job_finished(record, state, now, ttl)  -- fan-out (children.lua)
end

local function decide(index, id, raw, job_id, uid, handler, given)
  local stream = KEYS[index]
  if given then
    local pending = redis.call('XPENDING', stream, group, id, id, 1)
    if #pending == 0 or pending[1][2] ~= consumer then
      return 'undelivered', job_id or '', uid or '', handler or '', 0, 0
    end
  end
  if not job_id or job_id == '' then
    local ok, msg = pcall(cjson.decode, raw)
    if not ok or type(msg) ~= 'table' or type(msg['job_id']) ~= 'string' then
      drop(stream, id)
      return 'bad', '', '', '', 0, 0
    end
    job_id, uid, handler = msg['job_id'], msg['uid'], msg['handler']
    if type(uid) ~= 'string' or type(handler) ~= 'string' then
      drop(stream, id)
      return 'bad', job_id, '', '', 0, 0
    end
  end
  local record = prefix .. 'job:' .. job_id
  local rec = redis.call('HMGET', record, 'uid', 'state', 'attempts', 'max_attempts', 'namespace', 'pool',
    'entry', 'worker', 'step', 'run', 'cancel_requested', 'attempt_log')
  if not rec[1] then
    drop(stream, id)
    return 'gone', job_id, uid, handler, 0, 0
  end
  if rec[1] ~= uid then
    drop(stream, id)
    return 'stale', job_id, uid, handler, 0, 0
  end
  local attempts = tonumber(rec[3]) or 0
  local max = tonumber(rec[4]) or handler_max[handler] or default_max
  if finished(rec[2]) then
    drop(stream, id)
    return 'done', job_id, uid, handler, attempts, max
  end
  if rec[7] and rec[7] ~= id then
    -- Another entry is the job's delivery (a producer wrote it twice, or a copy survived):
    -- only that one may run or fail the job.
    drop(stream, id)
    return 'duplicate', job_id, uid, handler, attempts, max
  end
  if rec[2] == 'Running' and rec[8] == consumer then
    -- This worker took this delivery already and never heard back: run it, uncounted again.
    return 'run', job_id, uid, handler, attempts, max
  end
  -- Cancelled: cancel.lua marks the record (cancel_requested) whenever it sets the cancel flag, so
  -- the record read above tells without reading the flag. A queued job it made Cancelled at once
  -- was dropped as finished above; this is one cancelled while it ran, whose worker died.
  if rec[11] == '1' then
    local message = 'cancelled before it started'
    close(record, 'Cancelled', message, nil)
    event(job_id, uid, rec, 'Cancelled', attempts, message, nil)
    redis.call('HINCRBY', prefix .. 'stats', 'cancelled', 1)
    drop(stream, id)
    return 'cancelled', job_id, uid, handler, attempts, max
  end
  if attempts >= max then
    local err = {type = 'WorkerLost', retryable = false,
      message = 'the worker running attempt ' .. attempts .. ' of ' .. max .. ' stopped without finishing it'}
    local err_json = cjson.encode(err)
    local dead = redis.call('XADD', prefix .. 'dlq', 'MAXLEN', '~', dlq_maxlen, '*', 'm', raw, 'reason', err.message,
      'error', err_json, 'attempts', attempts, 'at', now, 'worker', consumer)
    redis.call('HSET', record, 'dead_letter', dead)  -- so rerun.lua removes this entry
    close(record, 'Failed', err.message, err_json)
    event(job_id, uid, rec, 'Failed', attempts, err.message, err)
    -- Not 'failed': no run of known duration ended, so the duration estimate must not count it.
    redis.call('HINCRBY', prefix .. 'stats', 'rejected', 1)
    redis.call('HINCRBY', prefix .. 'stats', 'dead_lettered', 1)
    drop(stream, id)
    return 'dead', job_id, uid, handler, attempts, max
  end
  local free = handler_free[handler]
  if free ~= nil then
    if free <= 0 then
      local fresh = redis.call('XADD', stream, '*', 'v', '1', 'm', raw, 'j', job_id, 'u', uid, 'h', handler)
      redis.call('HSET', record, 'entry', fresh)
      drop(stream, id)
      return 'deferred', job_id, uid, handler, attempts, max
    end
    handler_free[handler] = free - 1
  end
  attempts = attempts + 1
  local run = tonumber(rec[10]) or 0
  redis.call('HSET', record, 'state', 'Running', 'attempts', attempts, 'max_attempts', max,
    'worker', consumer, 'started_at', now, 'updated_at', now, 'entry', id, 'progress', '', 'message', '',
    -- attempt history (jobindex.lua), from the record read above
    'attempt_log', kw_attempt_log_started(rec[12], attempts, run, consumer, now))
  event(job_id, uid, rec, 'Running', attempts, nil, nil, run)
  return 'run', job_id, uid, handler, attempts, max
end

local function take(index, id, raw, job_id, uid, handler, given)
  local verdict, job, u, h, attempt, max = decide(index, id, raw, job_id, uid, handler, given)
  local n = #out
  out[n + 1] = index
  out[n + 2] = id
  out[n + 3] = job
  out[n + 4] = u
  out[n + 5] = h
  out[n + 6] = raw
  out[n + 7] = verdict
  out[n + 8] = attempt
  out[n + 9] = max
end

local function deliver(index, reply)
  local n = 0
  if reply then
    for _, entry in ipairs(reply[1][2]) do
      local fields = entry[2]
      if #fields == 10 and fields[3] == 'm' and fields[5] == 'j' and fields[7] == 'u' and fields[9] == 'h' then
        -- The layout every writer of the streams uses (v, m, j, u, h): read in place.
        take(index, entry[1], fields[4], fields[6], fields[8], fields[10])
      else
        local f = {}
        for j = 1, #fields, 2 do
          f[fields[j]] = fields[j + 1]
        end
        take(index, entry[1], f['m'] or '', f['j'], f['u'], f['h'])
      end
      n = n + 1
    end
  end
  return n
end

-- Priority aging (see the header): the rank of an entry of stream `index` added at `ms`.
local now_ms = math.floor(tonumber(now) * 1000)
local function rank(index, id)
  local ms = tonumber(string.match(id, '^(%d+)')) or 0
  local level = index - 1 - math.floor(math.max(0, now_ms - ms) / aging_ms)
  return math.max(0, level), ms
end

local function before(a, b)  -- {level, ms, index}: does a go first?
  if a[1] ~= b[1] then return a[1] < b[1] end
  if a[2] ~= b[2] then return a[2] < b[2] end
  return a[3] < b[3]
end

-- The last entry of `stream` the group has handed out ('0-0' before the first), or false when
-- there is no stream.
local function delivered_up_to(stream)
  if redis.call('EXISTS', stream) == 0 then
    return false
  end
  local last = '0-0'
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local f = {}
    for i = 1, #g, 2 do
      f[g[i]] = g[i + 1]
    end
    if f['name'] == group then
      last = f['last-delivered-id']
    end
  end
  return last
end

local function take_aged(remaining)
  local last = {}
  for index, stream in ipairs(KEYS) do
    last[index] = delivered_up_to(stream)  -- false: no stream, nothing waits on it
  end
  local heads = {}
  while remaining > 0 do
    local best, second = nil, nil
    for index = 1, #KEYS do
      if last[index] and heads[index] == nil then
        local head = redis.call('XRANGE', KEYS[index], '(' .. last[index], '+', 'COUNT', 1)[1]
        heads[index] = head and head[1] or false
      end
      if last[index] and heads[index] then
        local level, ms = rank(index, heads[index])
        local r = {level, ms, index}
        if not best or before(r, best) then
          best, second = r, best
        elseif not second or before(r, second) then
          second = r
        end
      end
    end
    if not best then
      break
    end
    local index, n = best[3], remaining
    if second then
      -- Entries of a stream only get younger: count those still ranking before the runner-up.
      n = 0
      for _, e in ipairs(redis.call('XRANGE', KEYS[index], '(' .. last[index], '+', 'COUNT', remaining)) do
        local level, ms = rank(index, e[1])
        if not before({level, ms, index}, second) then
          break
        end
        n = n + 1
        last[index] = e[1]
      end
    else
      last[index] = false  -- read to its end below: nothing else ranks
    end
    heads[index] = nil
    local got = deliver(index, redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', math.max(1, n),
      'STREAMS', KEYS[index], '>'))
    if got == 0 then
      last[index] = false
    end
    remaining = remaining - math.max(1, got)
  end
  return remaining
end

-- Slots left after a read: more than 0 only when every stream was read to its end.
local left = 0
if ARGV[1] == 'read' and aging_ms > 0 then
  left = take_aged(tonumber(ARGV[4]))
elseif ARGV[1] == 'read' then
  left = tonumber(ARGV[4])
  for index, stream in ipairs(KEYS) do
    if left <= 0 then
      break
    end
    local reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', left, 'STREAMS', stream, '>')
    left = left - deliver(index, reply)
  end
else
  for i = 15, #ARGV, 6 do
    take(tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], true)
  end
end
kw_index_flush()  -- jobindex.lua: the trims of what this call finished (cancelled, dead)
if ARGV[8] == '1' then
  -- Every stream read to its end: nothing was waiting beyond what this call took. (An entry
  -- a 'deferred' verdict put back is beyond these ids: the next read wakes for it at once.)
  local ids = {}
  if left > 0 then
    for index, stream in ipairs(KEYS) do
      ids[index] = delivered_up_to(stream) or '0-0'
    end
  end
  out[#out + 1] = ids
end
return out
