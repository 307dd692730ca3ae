-- Idempotent enqueue of a batch of messages for one pool: for each, write the
-- job record (state Queued) and XADD the message to its priority stream,
-- unless this (job_id, uid) is already known.
--
-- Every message is checked first: one no worker could run is refused with the reason and
-- nothing is written for it (the other messages of the batch are unaffected). What is
-- checked: a JSON object with non-empty text job_id, uid, namespace and handler, pool equal to
-- ARGV[4], input an object (or absent), priority critical/high/normal/low (or absent), timeout_seconds
-- a number > 0 (or absent/null), max_attempts a whole number from 1 to MAX_ATTEMPTS (or
-- absent/null), enqueued_at a number (or absent), not_before a number (or absent/null).
--
-- Delayed jobs (not_before later than now): the message goes to the pool's delayed sorted set
-- (score not_before), the same set and record shape as a retry waiting out its backoff (entry
-- '', msg = the member), so the promoter moves it onto its stream when it is due.
--
-- ARGV[1] now   ARGV[2] pool key prefix 'kw:{ns/pool}:'   ARGV[3] unused (was the job->pools pointer prefix)
-- ARGV[4] pool name   ARGV[5..] message JSON (protocol.JobMessage), one per job
-- Returns one result per message: {1, position} enqueued, {0, position} already enqueued (same
-- uid, or a different uid whose job has not finished yet), or 'invalid: <why>'. The position
-- (position.lua) is the jobs ahead of it in its pool's queue, -1 when it does not wait on a stream
-- (delayed, running, finished, or another uid's job).
-- The record's entry_seq is '<entry> <n>': the entry's number on its stream (entries-added after
-- its XADD), when the workers' group knows its entries-read; positions.lua counts from it.
-- Keys are derived from the prefixes (all within the pool's hash tag, except the
-- job->pools set), so one call can carry a thousand jobs.
--! include children
--! include position
local now, prefix, pool = ARGV[1], ARGV[2], ARGV[4]
-- Same as kubeworkers.protocol.MAX_ATTEMPTS_LIMIT (a test keeps the two equal).
local MAX_ATTEMPTS = 1000
local PRIORITIES = {critical = true, high = true, normal = true, low = true}
local results = {}
local enqueued = 0

local function absent(v)
  return v == nil or v == cjson.null
end

local function text(v)
  return type(v) == 'string' and v ~= ''
end

-- Why no worker could run this message, or nil.
local function invalid(msg)
  if type(msg) ~= 'table' then
    return 'the message is not a JSON object'
  end
  for _, name in ipairs({'job_id', 'uid', 'namespace', 'handler'}) do
    if not text(msg[name]) then
      return name .. ' must be non-empty text'
    end
  end
  if msg['pool'] ~= pool then
    return 'pool must be ' .. pool
  end
  local input = msg['input']
  if not absent(input) and (type(input) ~= 'table' or #input > 0) then
    return 'input must be a JSON object'
  end
  if not absent(msg['priority']) and not PRIORITIES[msg['priority']] then
    return 'priority must be critical, high, normal or low'
  end
  local timeout = msg['timeout_seconds']
  if not absent(timeout) and (type(timeout) ~= 'number' or not (timeout > 0) or timeout == math.huge) then
    return 'timeout_seconds must be a number of seconds > 0'
  end
  local attempts = msg['max_attempts']
  if not absent(attempts) and (type(attempts) ~= 'number' or attempts ~= math.floor(attempts)
      or attempts < 1 or attempts > MAX_ATTEMPTS) then
    return 'max_attempts must be a whole number from 1 to ' .. MAX_ATTEMPTS
  end
  if not absent(msg['enqueued_at']) and type(msg['enqueued_at']) ~= 'number' then
    return 'enqueued_at must be a number (unix seconds)'
  end
  local not_before = msg['not_before']
  if not absent(not_before) and (type(not_before) ~= 'number' or not_before ~= not_before
      or not_before == math.huge or not_before == -math.huge) then
    return 'not_before must be a number (unix seconds)'
  end
  return nil
end

for i = 5, #ARGV do
  local raw = ARGV[i]
  local ok, msg = pcall(cjson.decode, raw)
  local problem = 'the message is not JSON'
  if ok then
    problem = invalid(msg)
  end
  if problem then
    results[#results + 1] = 'invalid: ' .. problem
  else
    local job_id, uid = msg['job_id'], msg['uid']
    local record = prefix .. 'job:' .. job_id
    local result, position = 1, -1
    if text(msg['parent']) and text(msg['parent_pool']) and msg['parent_pool'] ~= pool then
      -- A child of a parent on another pool: read the parent's record before this message writes
      -- anything, so that on a Redis Cluster (the parent in another slot) the script is refused
      -- here, with nothing of the child written (children.lua writes the parent's keys later).
      redis.call('EXISTS', 'kw:{' .. msg['namespace'] .. '/' .. msg['parent_pool'] .. '}:job:' .. msg['parent'])
    end
    local existing = redis.call('HGET', record, 'uid')
    if existing then
      if existing == uid then
        result = 0
        local rec = redis.call('HMGET', record, 'state', 'priority', 'entry', 'entry_seq')
        position = kw_position(prefix, rec[1], rec[2], rec[3], rec[4])
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
      local priority = absent(msg['priority']) and 'normal' or msg['priority']
      local max_attempts = msg['max_attempts']
      if absent(max_attempts) then
        max_attempts = ''
      end
      -- Delayed jobs (begin) ---------------------------------------------------------------
      local not_before, id, message, entry_seq = msg['not_before'], '', '', ''
      if not absent(not_before) and not_before > tonumber(now) then
        redis.call('ZADD', prefix .. 'delayed', not_before, raw)
        message = 'delayed'
      else
        not_before = nil
        id = redis.call('XADD', prefix .. 'jobs:' .. priority, '*', 'v', '1', 'm', raw,
          'j', job_id, 'u', uid, 'h', msg['handler'])
        kw_stream_added(prefix, priority)
        local seq = kw_entry_seq(prefix, priority)
        if seq then
          entry_seq = id .. ' ' .. seq
        end
        position = kw_tail_position(prefix, priority)  -- position.lua: it is the stream's last entry
      end
      -- Delayed jobs (end) -----------------------------------------------------------------
      redis.call('HSET', record,
        'job_id', job_id, 'uid', uid, 'namespace', msg['namespace'], 'pool', msg['pool'],
        'handler', msg['handler'], 'priority', priority, 'state', 'Queued', 'attempts', '0',
        'max_attempts', max_attempts, 'entry', id,
        'enqueued_at', string.format('%.6f', absent(msg['enqueued_at']) and 0 or msg['enqueued_at']),
        'updated_at', now, 'msg', raw, 'message', message, 'entry_seq', entry_seq)
      if not_before then
        redis.call('HSET', record, 'not_before', string.format('%.6f', not_before))
      end
      -- Sequences (docs/workflows.md): the record says which step runs (a StepRef), and the
      -- scripts that write its events splice that in.
      if type(msg['steps']) == 'table' and #msg['steps'] > 0 then
        local names = {}
        for n, step in ipairs(msg['steps']) do
          names[n] = type(step) == 'table' and tostring(step['name']) or ''
        end
        local index = type(msg['step']) == 'number' and msg['step'] or 0
        redis.call('HSET', record, 'step', '{"index": ' .. string.format('%d', index) .. ', "names": ' ..
          cjson.encode(names) .. '}')
      end
      enqueued = enqueued + 1
      kw_child_enqueued(record, msg, now)  -- fan-out (children.lua): a child registers with its parent
      kw_index_live(record, now, msg['handler'])  -- jobs index (jobindex.lua)
    end
    results[#results + 1] = {result, position}
  end
end
if enqueued > 0 then
  redis.call('HINCRBY', prefix .. 'stats', 'enqueued', enqueued)
end
kw_children_flush(now)  -- fan-out (children.lua)
kw_index_flush()  -- jobs index (jobindex.lua): the live sets, one ZADD each
return results
