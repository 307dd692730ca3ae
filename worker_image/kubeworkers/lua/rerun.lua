-- Rerun a failed job: a new run of the same job (same id, same uid), queued again with its
-- attempts reset. The one script behind `kubeworkers jobs retry` and `kubeworkers dlq replay`
-- (kubeworkers/reruns.py), so both obey the same checks, made here atomically:
--
--   * the record exists and holds the uid the caller expects (a Job deleted and re-created under
--     the same name is another job: its record is never overwritten by an old job's rerun);
--   * the job is Failed (Succeeded, Cancelled, and jobs still queued or running are refused;
--     so are the jobs of a fan-out, parents and children: their counts would be told twice);
--   * the record is at the run the caller saw (two reruns sent at once: the first wins, the
--     second is refused, even when the first run has already finished again).
--
-- What it writes: the record's `msg` as it stands (the job's current message: for a continuation
-- or a later step of a sequence, that step's, never a reconstructed first message) with its
-- `run` set to the record's run + 1, XADDed to the job's priority stream; the record Queued,
-- attempts 0, run + 1, its previous outcome cleared, PERSISTed (a finished record had a TTL);
-- (the job -> pools hint is the caller's); the cancel flag deleted; the job's
-- dead-letter entry deleted (the one the record names, and ARGV[6] if given); a `Queued`
-- event with the new run, which the operator folds into the Job CR (phase Queued, reason Rerun).
--
-- KEYS[1] record   KEYS[2] cancel flag   KEYS[3] dead-letter stream   KEYS[4] the pool's events stream
-- ARGV[1] now: unix seconds   ARGV[2] pool key prefix 'kw:{ns/pool}:'   ARGV[3] pool name
-- ARGV[4] expected uid   ARGV[5] expected run ('' = whatever it is)
-- ARGV[6] dead-letter entry id to remove as well ('' = none; for entries written before the
--         record named its entry)   ARGV[7] who asks, for the record's message ('jobs retry', ...)
-- ARGV[8] the dead-letter entry's message ('' = none): used only when the record is gone (expired),
--         to write it afresh, and only if that message has the expected uid
-- Returns {verdict, run, entry}: verdict 'rerun' (run = the new run, entry = the new stream
-- entry), or a refusal with the record's run: 'unknown' (no record, and no message for it), 'uid' (another uid: a newer
-- job of that id), 'state:<state>' (not Failed), 'run' (not at the expected run: a concurrent
-- rerun won), 'fan-out' (a parent or a child), 'message' (the record's message cannot be read).
--! include jobindex
local rec = redis.call('HMGET', KEYS[1], 'uid', 'state', 'run', 'msg', 'priority', 'handler', 'job_id',
  'namespace', 'children_total', 'dead_letter', 'parent')
local run = tonumber(rec[3]) or 0
local raw, ok, msg = rec[4] or '', false, nil
if not rec[1] then
  -- No record: it expired (a dead-letter entry outlives its record's TTL). The entry's message
  -- (ARGV[8]) stands for it, if it is of the expected uid; nothing else can be overwritten.
  ok, msg = pcall(cjson.decode, ARGV[8])
  if ARGV[8] == '' or not ok or type(msg) ~= 'table' or msg['uid'] ~= ARGV[4] or type(msg['job_id']) ~= 'string'
      or type(msg['handler']) ~= 'string' or type(msg['namespace']) ~= 'string' then
    return {'unknown', 0, ''}
  end
  raw, run = ARGV[8], tonumber(msg['run']) or 0
  rec = {msg['uid'], 'Failed', run, raw, msg['priority'], msg['handler'], msg['job_id'], msg['namespace'], nil, nil, nil}
end
if rec[1] ~= ARGV[4] then
  return {'uid', run, ''}
end
if ARGV[5] ~= '' and tonumber(ARGV[5]) ~= run then
  return {'run', run, ''}
end
if rec[2] ~= 'Failed' then
  return {'state:' .. (rec[2] or ''), run, ''}
end
if (tonumber(rec[9]) or 0) > 0 or (rec[11] or '') ~= '' then
  return {'fan-out', run, ''}
end
if not ok then
  ok, msg = pcall(cjson.decode, raw)
end
if not ok or type(msg) ~= 'table' then
  return {'message', run, ''}
end
local now, prefix, pool = ARGV[1], ARGV[2], ARGV[3]
local new_run = run + 1
-- The message is rewritten as text, not re-encoded (cjson would round its numbers, the input's
-- too): JobMessage.model_dump_json() writes `run` last, so it is replaced in place; a message
-- without it last gets it appended (JSON readers keep the last of duplicate keys).
local fresh, replaced = string.gsub(raw, '"run"%s*:%s*%d+%s*}%s*$', '"run":' .. new_run .. '}')
if replaced == 0 then
  fresh = string.match(raw, '^(.-)%s*}%s*$') .. ', "run": ' .. new_run .. '}'
end
local priority = rec[5]
if priority ~= 'critical' and priority ~= 'high' and priority ~= 'low' then
  priority = 'normal'
end
if redis.call('EXISTS', KEYS[1]) == 0 then  -- written afresh from the dead-letter entry's message
  local max_attempts = msg['max_attempts']
  redis.call('HSET', KEYS[1], 'job_id', rec[7], 'uid', rec[1], 'namespace', rec[8], 'pool', pool,
    'handler', rec[6], 'priority', priority, 'max_attempts', type(max_attempts) == 'number' and max_attempts or '',
    'enqueued_at', string.format('%.6f', type(msg['enqueued_at']) == 'number' and msg['enqueued_at'] or 0))
end
local id = redis.call('XADD', prefix .. 'jobs:' .. priority, '*', 'v', '1', 'm', fresh, 'j', rec[7], 'u', rec[1],
  'h', rec[6])
local note = 'rerun ' .. new_run .. ' (' .. ARGV[7] .. ')'
redis.call('HDEL', KEYS[1], 'error', 'output', 'finished_at', 'started_at', 'worker', 'progress',
  'cancel_requested', 'not_before', 'dead_letter')
redis.call('HSET', KEYS[1], 'state', 'Queued', 'attempts', 0, 'run', new_run, 'entry', id, 'msg', fresh,
  'updated_at', now, 'message', note)
redis.call('PERSIST', KEYS[1])
kw_index_live(KEYS[1], now)  -- jobs index (jobindex.lua)
kw_index_flush()  -- jobindex.lua
redis.call('DEL', KEYS[2])
if rec[10] and rec[10] ~= '' then
  redis.call('XDEL', KEYS[3], rec[10])
end
if ARGV[6] ~= '' then
  redis.call('XDEL', KEYS[3], ARGV[6])
end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'e', cjson.encode({job_id = rec[7], uid = rec[1],
  namespace = rec[8], pool = pool, state = 'Queued', attempt = 0, run = new_run, at = tonumber(now),
  message = note}))
return {'rerun', new_run, id}
