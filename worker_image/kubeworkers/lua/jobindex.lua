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
--   kw_index_live(record, now[, handler])       enqueue.lua and rerun.lua: the job is live (handler:
--                                               the record's, when the caller knows it); written by
--                                               kw_index_flush()
--   kw_index_handler(record, old, new)          settle.lua (a sequence's next step) and children.lua
--                                               (a parent's continuation): a live job's handler changed
--   kw_index_finished(record, state, now, ttl[, known])  children.lua's kw_job_finished (every
--                                               terminal write); its index writes wait for kw_index_flush()
--   kw_index_flush()                            last in every script that finishes jobs or makes them
--                                               live (take, settle, cancel, fail_lost, enqueue, rerun):
--                                               the index writes and trims noted, once per set
--   kw_attempt_log_started(raw, attempt, run, worker, now)  take.lua, when an attempt starts: the
--                                               new attempt_log text for its Running HSET
--   kw_attempt_ended(record, outcome, now, err_json, message)  the end of the open attempt
--   kw_attempt_log_settled(raw, w, now[, first])  settle.lua: the attempt_log text with the attempt
--                                               a write settles ended (nil: none open), for its HSET
--   kw_attempt_settled(record, w, now)          the same, read and written here (a hand-back)

local function kw_index_prefix(record)
  local at = string.find(record, ':job:', 1, true)
  return string.sub(record, 1, at) .. 'idx:', string.sub(record, at + 5)
end

local function kw_index_by_handler(idx, state, handler)
  return idx .. state .. ':h:' .. handler
end

-- The index keys of one record key prefix, each built once per call (a batch finishes many jobs
-- of one pool): {idx = prefix .. 'idx:', set = {state -> key}, by = {state -> {handler -> key}}}.
local kw_index_keys_of = {}

local function kw_index_keys(prefix)
  local k = kw_index_keys_of[prefix]
  if not k then
    k = {idx = prefix .. 'idx:', set = {}, by = {}}
    kw_index_keys_of[prefix] = k
  end
  return k
end

local function kw_index_set(k, state)  -- idx .. state
  local key = k.set[state]
  if not key then
    key = k.idx .. state
    k.set[state] = key
  end
  return key
end

local function kw_index_set_by_handler(k, state, handler)  -- kw_index_by_handler(idx, state, handler)
  local by = k.by[state]
  if not by then
    by = {}
    k.by[state] = by
  end
  local key = by[handler]
  if not key then
    key = kw_index_by_handler(k.idx, state, handler)
    by[handler] = key
  end
  return key
end

-- JSON text of the hot paths built by hand: cjson.encode of a table formats every number with
-- snprintf and costs about three times what the concatenation of its parts does. Numbers are
-- formatted as cjson formats them (%.14g), so the text is the same JSON either way.
local kw_json_ints, kw_json_times = {}, {}

local function kw_json_int(v)  -- a small whole number (attempt, run)
  local text = kw_json_ints[v]
  if not text then
    text = cjson.encode(v)
    kw_json_ints[v] = text
  end
  return text
end

local function kw_json_time(now)  -- unix seconds as text -> the JSON number cjson would write
  local text = kw_json_times[now]
  if not text then
    text = cjson.encode(tonumber(now))
    kw_json_times[now] = text
  end
  return text
end

-- A string as JSON text, memoised for the values a call repeats (worker, namespace, pool,
-- outcome): cjson.encode is a C call with a buffer of its own each time.
local kw_json_strs = {}

local function kw_json_str(v)
  if v == nil then
    return 'null'
  end
  local text = kw_json_strs[v]
  if not text then
    text = cjson.encode(v)
    kw_json_strs[v] = text
  end
  return text
end

-- The history of a job whose one attempt is open: what kw_attempt_log_started writes for a
-- job's first attempt, and what the end of that attempt recognises (to append its end as text).
local function kw_attempt_log_first(attempt, run, worker, started_at)
  return '[{"attempt": ' .. kw_json_int(attempt) .. ', "run": ' .. kw_json_int(run) .. ', "worker": ' ..
    kw_json_str(worker) .. ', "started_at": ' .. kw_json_time(started_at) .. '}]'
end

-- The attempt history as a table, from the field's JSON text (nil, false or unreadable: none).
local function kw_attempt_log_of(raw)
  if raw then
    local ok, log = pcall(cjson.decode, raw)
    if ok and type(log) == 'table' then
      return log
    end
  end
  return {}
end

-- The history raw (the field's text) with its open attempt ended: the new text, or nil when no
-- attempt is open (nothing to write). Pure: the callers merge the field into a write of their own.
-- first (optional): the caller's kw_attempt_log_first(...) of the record's current attempt; when
-- raw is exactly that and the end carries no error or message, the end is appended as text.
local function kw_attempt_log_ended(raw, outcome, now, err_json, message, first)
  if first and raw == first and (not err_json or err_json == '') and (not message or message == '') then
    return string.sub(raw, 1, -3) .. ', "outcome": ' .. kw_json_str(outcome) .. ', "ended_at": ' ..
      kw_json_time(now) .. '}]'
  end
  local log = kw_attempt_log_of(raw)
  local last = log[#log]
  if not last or last.outcome then
    return nil
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
  return cjson.encode(log)
end

local function kw_attempt_ended(record, outcome, now, err_json, message)
  local text = kw_attempt_log_ended(redis.call('HGET', record, 'attempt_log'), outcome, now, err_json, message)
  if text then
    redis.call('HSET', record, 'attempt_log', text)
  end
end

-- The history raw with attempt `attempt` (of run `run`) started: the new text, for the caller's
-- HSET that marks the job Running (take.lua reads raw and run with the rest of the record).
local function kw_attempt_log_started(raw, attempt, run, worker, now)
  if not raw or raw == '' then
    return kw_attempt_log_first(attempt, run, worker, now)
  end
  local log = kw_attempt_log_of(raw)
  local last = log[#log]
  if last and not last.outcome then
    last.outcome = 'lost'  -- it never ended where anyone wrote it down
  end
  log[#log + 1] = {attempt = attempt, run = run, worker = worker, started_at = tonumber(now)}
  while #log > ATTEMPT_LOG_MAX do
    table.remove(log, 1)
  end
  return cjson.encode(log)
end

-- A finish moves its id out of the live sets and into the finished ones, which are then trimmed
-- (and a per-handler one given its expiry). Made once per set per call, with one variadic ZREM
-- and ZADD and one trim, the result is the same as after each finish (a set keeps its newest
-- JOB_INDEX_MAXLEN and those younger than the TTL either way; a call is atomic), so
-- kw_index_finished notes them and kw_index_flush() makes them (kw_index_live's ZADDs too). Every
-- script that finishes jobs or makes them live calls it last (tests/unit/test_lua_index_flush.py).
local kw_index_todo = {}    -- key -> {now, ttl, expire}
local kw_index_longest = {} -- idx .. state -> the longest result TTL, read once per call
local kw_index_removed = {} -- live key -> ids
local kw_index_added = {}   -- finished key -> {score, id, score, id, ...}

local function kw_index_note(lists, key, a, b)
  local list = lists[key]
  if not list then
    list = {}
    lists[key] = list
  end
  list[#list + 1] = a
  if b then
    list[#list + 1] = b
  end
end

-- One command per key for a list of arguments, in chunks well inside unpack()'s limit.
local function kw_index_variadic(command, key, list)
  for i = 1, #list, 4000 do
    redis.call(command, key, unpack(list, i, math.min(#list, i + 3999)))
  end
end

local function kw_index_later(key, now, ttl, expire)
  local todo = kw_index_todo[key]
  if not todo then
    kw_index_todo[key] = {now = tonumber(now), at = now, ttl = ttl, expire = expire}
  elseif todo.at == now and todo.ttl >= ttl and (todo.expire or not expire) then
    return  -- noted already with this time (a call's writes share it): nothing changes
  else
    todo.now, todo.ttl = math.max(todo.now, tonumber(now)), math.max(todo.ttl, ttl)
    todo.expire = todo.expire or expire
  end
end

local function kw_index_flush()
  for key, ids in pairs(kw_index_removed) do
    kw_index_variadic('ZREM', key, ids)
  end
  for key, list in pairs(kw_index_added) do
    kw_index_variadic('ZADD', key, list)
  end
  kw_index_removed, kw_index_added = {}, {}
  for key, todo in pairs(kw_index_todo) do
    redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. (todo.now - todo.ttl))
    redis.call('ZREMRANGEBYRANK', key, 0, -(JOB_INDEX_MAXLEN + 1))
    if todo.expire then
      redis.call('EXPIRE', key, math.ceil(todo.ttl))
    end
  end
  kw_index_todo = {}
end

-- Noted for kw_index_flush() too (one variadic ZADD per set for a whole enqueue batch).
local function kw_index_live(record, now, handler)
  local idx, job_id = kw_index_prefix(record)
  kw_index_note(kw_index_added, idx .. 'live', now, job_id)
  handler = handler or redis.call('HGET', record, 'handler')
  if handler then
    kw_index_note(kw_index_added, kw_index_by_handler(idx, 'live', handler), now, job_id)
  end
end

local function kw_index_handler(record, old, new)
  if old == new or not new then
    return
  end
  kw_index_flush()  -- the live sets as they stand, with what this call noted
  local idx, job_id = kw_index_prefix(record)
  local score = redis.call('ZSCORE', idx .. 'live', job_id)
  if old then
    redis.call('ZREM', kw_index_by_handler(idx, 'live', old), job_id)
  end
  if score then
    redis.call('ZADD', kw_index_by_handler(idx, 'live', new), score, job_id)
  end
end

-- known (optional): what the caller read of the record already: {handler = <its handler or
-- false>, log_closed = true when the caller ended the open attempt in this call, and optionally
-- prefix and job_id: the record key's prefix 'kw:{ns/pool}:' and the job id}.
local function kw_index_finished(record, state, now, ttl, known)
  local prefix, job_id
  if known and known.prefix then
    prefix, job_id = known.prefix, known.job_id
  else
    local at = string.find(record, ':job:', 1, true)
    prefix, job_id = string.sub(record, 1, at), string.sub(record, at + 5)
  end
  local k = kw_index_keys(prefix)
  local idx = k.idx
  local key = kw_index_set(k, state)
  local handler
  if known then
    handler = known.handler
  else
    handler = redis.call('HGET', record, 'handler')
  end
  kw_index_note(kw_index_removed, kw_index_set(k, 'live'), job_id)
  if not (known and known.log_closed) then
    kw_attempt_ended(record, 'lost', now, nil, nil)  -- an attempt still open ended with its worker
  end
  kw_index_note(kw_index_added, key, now, job_id)
  -- By age: the longest result TTL any writer of this index used, so a writer with a shorter one
  -- (a CLI with another setting) never drops ids whose records are still kept.
  local longest = kw_index_longest[key]
  if longest == nil then
    longest = tonumber(redis.call('HGET', idx .. 'ttl', state)) or 0
  end
  if ttl > longest then
    redis.call('HSET', idx .. 'ttl', state, ttl)
    longest = ttl
  end
  kw_index_longest[key] = longest
  kw_index_later(key, now, longest, false)
  if handler then
    local by_handler = kw_index_set_by_handler(k, state, handler)
    kw_index_note(kw_index_removed, kw_index_set_by_handler(k, 'live', handler), job_id)
    kw_index_note(kw_index_added, by_handler, now, job_id)
    kw_index_later(by_handler, now, longest, true)
  end
end

local KW_SETTLED_OUTCOME = {retry = 'retry', wait = 'waiting', advance = 'step succeeded'}

-- The history raw with the attempt settle.lua's write w ends ended: the new text, or nil (first:
-- see kw_attempt_log_ended).
local function kw_attempt_log_settled(raw, w, now, first)
  if w.kind == 'requeue' then
    return kw_attempt_log_ended(raw, w.uncount and 'handed back' or 'lost', now, nil, w.message, first)
  end
  return kw_attempt_log_ended(raw, w.kind == 'finish' and w.state or KW_SETTLED_OUTCOME[w.kind] or w.kind, now,
    w.error, nil, first)
end

local function kw_attempt_settled(record, w, now)
  local text = kw_attempt_log_settled(redis.call('HGET', record, 'attempt_log'), w, now)
  if text then
    redis.call('HSET', record, 'attempt_log', text)
  end
end
