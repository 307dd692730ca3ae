-- The jobs index and each job's attempt history (docs/cli.md, `kubeworkers jobs list|describe`):
-- a library, not a script of its own, spliced in by `--! include jobindex` (children.lua has it, so
-- every script with fan-out has these functions too) and called from one well-marked line each.
--
-- Keys (all derived from a record key prefix .. 'job:' .. id, never passed):
--   prefix .. 'idx:live'         sorted set: ids of jobs not finished, scored by when they were
--                                enqueued (or run again); an id leaves it when its job finishes
--   prefix .. 'idx:' .. state    sorted sets, state Succeeded|Failed|Cancelled: ids scored by when
--                                they finished; kept to the newest JOB_INDEX_MAXLEN (the prelude's)
--                                and to the result TTL (older records have expired)
--   prefix .. 'idx:ttl'          hash: state -> the longest result TTL (seconds) a finish of that
--                                state was written with, the age the index is trimmed to
--   prefix .. 'idx:' .. state .. ':h:' .. handler
--                                the same four sets per handler (state live or finished), the same
--                                ids and scores, bounded the same way; a finished one also expires
--                                that longest TTL after its last finish, so the set of a handler
--                                nobody runs any more goes with the last of its records
-- A reader checks each id's record: an id whose record expired, or whose state moved on (a rerun,
-- a new incarnation), is skipped, so the index never has to be exact, only bounded.
--
-- Record field 'attempt_log': JSON list of the latest ATTEMPT_LOG_MAX (the prelude's) attempts,
-- oldest first, each {attempt, run, worker, started_at, ended_at, outcome, error, message}; outcome
-- is the attempt's end: Succeeded | Failed | Cancelled | retry (failed, to be tried again) | waiting
-- (for its children) | step succeeded | handed back (its worker stopped, the attempt uncounted) |
-- lost (its worker vanished). It lives and expires with the record.
--
-- Functions:
--   kw_index_live(record, now)                  enqueue.lua and rerun.lua: the job is live
--   kw_index_handler(record, old, new)          settle.lua (a sequence's next step) and children.lua
--                                               (a parent's continuation): a live job's handler changed
--   kw_index_finished(record, state, now, ttl)  children.lua's kw_job_finished (every terminal write)
--   kw_attempt_started(record, attempt, worker, now)      take.lua, when an attempt starts
--   kw_attempt_ended(record, outcome, now, err_json, message)  the end of the open attempt
--   kw_attempt_settled(record, w, now)          settle.lua: the end of the attempt a write settles

local function kw_index_prefix(record)
  local at = string.find(record, ':job:', 1, true)
  return string.sub(record, 1, at) .. 'idx:', string.sub(record, at + 5)
end

local function kw_index_by_handler(idx, state, handler)
  return idx .. state .. ':h:' .. handler
end

local function kw_index_live(record, now)
  local idx, job_id = kw_index_prefix(record)
  redis.call('ZADD', idx .. 'live', now, job_id)
  local handler = redis.call('HGET', record, 'handler')
  if handler then
    redis.call('ZADD', kw_index_by_handler(idx, 'live', handler), now, job_id)
  end
end

local function kw_index_handler(record, old, new)
  if old == new or not new then
    return
  end
  local idx, job_id = kw_index_prefix(record)
  local score = redis.call('ZSCORE', idx .. 'live', job_id)
  if old then
    redis.call('ZREM', kw_index_by_handler(idx, 'live', old), job_id)
  end
  if score then
    redis.call('ZADD', kw_index_by_handler(idx, 'live', new), score, job_id)
  end
end

local function kw_attempt_log(record)
  local raw = redis.call('HGET', record, 'attempt_log')
  if raw then
    local ok, log = pcall(cjson.decode, raw)
    if ok and type(log) == 'table' then
      return log
    end
  end
  return {}
end

local function kw_attempt_ended(record, outcome, now, err_json, message)
  local log = kw_attempt_log(record)
  local last = log[#log]
  if not last or last.outcome then
    return
  end
  last.outcome, last.ended_at = outcome, tonumber(now)
  if err_json and err_json ~= '' then
    local ok, err = pcall(cjson.decode, err_json)
    if ok and type(err) == 'table' then
      last.error = {type = err.type, message = string.sub(tostring(err.message or ''), 1, 500)}
    end
  end
  if message and message ~= '' then
    last.message = string.sub(message, 1, 500)
  end
  redis.call('HSET', record, 'attempt_log', cjson.encode(log))
end

local function kw_attempt_started(record, attempt, worker, now)
  local log = kw_attempt_log(record)
  local last = log[#log]
  if last and not last.outcome then
    last.outcome = 'lost'  -- it never ended where anyone wrote it down
  end
  log[#log + 1] = {attempt = attempt, run = tonumber(redis.call('HGET', record, 'run')) or 0, worker = worker,
    started_at = tonumber(now)}
  while #log > ATTEMPT_LOG_MAX do
    table.remove(log, 1)
  end
  redis.call('HSET', record, 'attempt_log', cjson.encode(log))
end

local function kw_index_trim(key, now, ttl)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. (tonumber(now) - ttl))
  redis.call('ZREMRANGEBYRANK', key, 0, -(JOB_INDEX_MAXLEN + 1))
end

local function kw_index_finished(record, state, now, ttl)
  local idx, job_id = kw_index_prefix(record)
  local key = idx .. state
  local handler = redis.call('HGET', record, 'handler')
  redis.call('ZREM', idx .. 'live', job_id)
  kw_attempt_ended(record, 'lost', now, nil, nil)  -- an attempt still open ended with its worker
  redis.call('ZADD', key, now, job_id)
  -- By age: the longest result TTL any writer of this index used, so a writer with a shorter one
  -- (a CLI with another setting) never drops ids whose records are still kept.
  local longest = math.max(ttl, tonumber(redis.call('HGET', idx .. 'ttl', state)) or 0)
  if longest > ttl then
    ttl = longest
  else
    redis.call('HSET', idx .. 'ttl', state, ttl)
  end
  kw_index_trim(key, now, ttl)
  if handler then
    local by_handler = kw_index_by_handler(idx, state, handler)
    redis.call('ZREM', kw_index_by_handler(idx, 'live', handler), job_id)
    redis.call('ZADD', by_handler, now, job_id)
    kw_index_trim(by_handler, now, ttl)
    redis.call('EXPIRE', by_handler, math.ceil(ttl))
  end
end

local KW_SETTLED_OUTCOME = {retry = 'retry', wait = 'waiting', advance = 'step succeeded'}

local function kw_attempt_settled(record, w, now)
  if w.kind == 'requeue' then
    kw_attempt_ended(record, w.uncount and 'handed back' or 'lost', now, nil, w.message)
  else
    kw_attempt_ended(record, w.kind == 'finish' and w.state or KW_SETTLED_OUTCOME[w.kind] or w.kind, now,
      w.error, nil)
  end
end
