-- Fan-out and joins (docs/workflows.md): a library, not a script of its own. A script that
-- needs it has the line `--! include children` where these functions must be defined
-- (kubeworkers.scripts splices this file in there), and calls them from one well-marked line.
--
-- Keys (all derived, never passed):
--   a child's record        prefix .. 'job:' .. id, with fields parent (the parent's job id) and
--                           parent_prefix (the parent pool's key prefix 'kw:{ns/pool}:')
--   a parent's record       parent_prefix .. 'job:' .. parent, with counts children_total,
--                           children_succeeded, children_failed, children_cancelled and, while
--                           Waiting, continuation (a handler) and continuation_input (JSON)
--   a parent's children     parent_prefix .. 'children:' .. parent: hash '<pool>/<child id>' -> state
--   the events stream       the parent pool's, parent_prefix .. 'events' (its slot: a parent and its
--                           children share a slot only on one pool, so on a Redis Cluster they must)
-- A parent's children hash expires with the parent's record when the parent finishes.
--
-- Functions:
--   kw_child_enqueued(record, msg, now)      enqueue.lua, for each new job: a child registers
--   kw_children_flush(now)                   enqueue.lua, once at the end: one counts event per parent
--   kw_job_finished(record, state, now, ttl[, known])  every place a record becomes Succeeded/Failed/
--                                           Cancelled; known: {parent, parent_prefix, pool, job_id,
--                                           children (the record has children_total), and what
--                                           kw_index_finished takes: handler, log_closed, prefix} when
--                                           the caller has read them (settle.lua), saving the reads
--   kw_wait(record, handler, input_json, now, message)   settle.lua's 'wait' write, after its checks
-- Returns nothing: errors raise (the calling script's pcall, if any, reports them).
--! include jobindex

-- Most bytes of children's outputs put into one continuation's input (the rest are read from
-- the children's records with Client.children).
local KW_CONTINUATION_OUTPUT_BYTES = 1048576
local kw_touched_parents = {}

local function kw_children_key(record)
  local at = string.find(record, ':job:', 1, true)
  return string.sub(record, 1, at) .. 'children:' .. string.sub(record, at + 5)
end

local function kw_events_key(record)  -- the events stream of a record's pool: 'kw:{ns/pool}:events'
  return string.sub(record, 1, string.find(record, ':job:', 1, true)) .. 'events'
end

local function kw_counts(parent_record)
  local c = redis.call('HMGET', parent_record, 'children_total', 'children_succeeded', 'children_failed',
    'children_cancelled')
  local total, succeeded = tonumber(c[1]) or 0, tonumber(c[2]) or 0
  local failed, cancelled = tonumber(c[3]) or 0, tonumber(c[4]) or 0
  return {total = total, active = math.max(0, total - succeeded - failed - cancelled), succeeded = succeeded,
    failed = failed, cancelled = cancelled}
end

local function kw_counts_event(parent_record, now)
  local r = redis.call('HMGET', parent_record, 'job_id', 'uid', 'namespace', 'pool', 'state', 'attempts', 'run')
  if not r[1] then
    return
  end
  redis.call('XADD', kw_events_key(parent_record), 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'e', cjson.encode({
    job_id = r[1], uid = r[2], namespace = r[3], pool = r[4], state = r[5], attempt = tonumber(r[6]) or 0,
    run = tonumber(r[7]) or 0, at = tonumber(now), children = kw_counts(parent_record)}))
end

local function kw_child_enqueued(record, msg, now)
  if type(msg['parent']) ~= 'string' or msg['parent'] == '' or type(msg['parent_pool']) ~= 'string' then
    return
  end
  local parent_prefix = 'kw:{' .. msg['namespace'] .. '/' .. msg['parent_pool'] .. '}:'
  local parent_record = parent_prefix .. 'job:' .. msg['parent']
  if redis.call('EXISTS', parent_record) == 0 then
    return  -- no such parent (any more): the job runs as one without a parent
  end
  redis.call('HSET', record, 'parent', msg['parent'], 'parent_prefix', parent_prefix)
  local member = msg['pool'] .. '/' .. msg['job_id']
  if redis.call('HSETNX', parent_prefix .. 'children:' .. msg['parent'], member, 'Queued') == 1 then
    redis.call('HINCRBY', parent_record, 'children_total', 1)
  else
    -- A finished child's id enqueued again (a new incarnation): it is active again.
    local before = redis.call('HGET', parent_prefix .. 'children:' .. msg['parent'], member)
    if before == 'Succeeded' or before == 'Failed' or before == 'Cancelled' then
      redis.call('HINCRBY', parent_record, 'children_' .. string.lower(before), -1)
    end
    redis.call('HSET', parent_prefix .. 'children:' .. msg['parent'], member, 'Queued')
  end
  kw_touched_parents[parent_record] = true
end

local function kw_children_flush(now)
  for parent_record in pairs(kw_touched_parents) do
    kw_counts_event(parent_record, now)
  end
  kw_touched_parents = {}
end

-- The parent's next step: its record back to Queued, on its pool's stream, running the
-- continuation handler with {input, counts, children: [{job_id, pool, state, output, error}]}.
local function kw_continue(parent_record, now)
  local r = redis.call('HMGET', parent_record, 'msg', 'priority', 'attempts', 'max_attempts', 'continuation',
    'continuation_input', 'job_id', 'uid', 'namespace', 'pool')
  local ok, msg = pcall(cjson.decode, r[1] or '')
  if not ok or type(msg) ~= 'table' then
    return
  end
  local prefix = string.sub(parent_record, 1, string.find(parent_record, ':job:', 1, true))
  local members = redis.call('HGETALL', kw_children_key(parent_record))
  local items, budget = {}, KW_CONTINUATION_OUTPUT_BYTES
  for i = 1, #members, 2 do
    local member, state = members[i], members[i + 1]
    local slash = string.find(member, '/', 1, true)
    local pool, job_id = string.sub(member, 1, slash - 1), string.sub(member, slash + 1)
    local child = redis.call('HMGET', 'kw:{' .. r[9] .. '/' .. pool .. '}:job:' .. job_id, 'output', 'error')
    local item = '{"job_id": ' .. cjson.encode(job_id) .. ', "pool": ' .. cjson.encode(pool) ..
      ', "state": ' .. cjson.encode(state)
    if child[1] and child[1] ~= '' and #child[1] <= budget then
      budget = budget - #child[1]
      item = item .. ', "output": ' .. child[1]
    elseif child[1] and child[1] ~= '' then
      item = item .. ', "output_omitted": true'
    end
    if child[2] and child[2] ~= '' then
      item = item .. ', "error": ' .. child[2]
    end
    items[#items + 1] = item .. '}'
  end
  local attempts = tonumber(r[3]) or 0
  -- The continuation gets as many attempts as the job had, counted on from the parent's.
  local max_attempts = attempts + (tonumber(r[4]) or tonumber(msg['max_attempts']) or 3)
  if max_attempts > 1000 then
    max_attempts = 1000
  end
  msg['handler'] = r[5]
  msg['max_attempts'] = max_attempts
  msg['input'] = nil
  if type(msg['retry']) == 'table' and type(msg['retry']['non_retryable_error_types']) == 'table'
      and next(msg['retry']['non_retryable_error_types']) == nil then
    msg['retry']['non_retryable_error_types'] = nil  -- cjson would write [] back as {}
  end
  local c = kw_counts(parent_record)
  local input = '{"input": ' .. (r[6] or '{}') .. ', "counts": ' .. cjson.encode(c) .. ', "children": [' ..
    table.concat(items, ', ') .. ']}'
  local raw = string.sub(cjson.encode(msg), 1, -2) .. ', "input": ' .. input .. '}'
  local id = redis.call('XADD', prefix .. 'jobs:' .. (r[2] or 'normal'), '*', 'v', '1', 'm', raw, 'j', r[7],
    'u', r[8], 'h', r[5])
  kw_index_handler(parent_record, redis.call('HGET', parent_record, 'handler'), r[5])  -- jobs index (jobindex.lua)
  redis.call('HSET', parent_record, 'state', 'Queued', 'handler', r[5], 'msg', raw, 'entry', id,
    'max_attempts', max_attempts, 'updated_at', now, 'message', 'children finished; continuing with ' .. r[5])
  redis.call('HDEL', parent_record, 'continuation', 'continuation_input')
  redis.call('XADD', kw_events_key(parent_record), 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'e', cjson.encode({
    job_id = r[7], uid = r[8], namespace = r[9], pool = r[10], state = 'Queued', attempt = attempts,
    run = tonumber(redis.call('HGET', parent_record, 'run')) or 0, at = tonumber(now), message = 'children finished; continuing with ' .. r[5]}))
end

local function kw_job_finished(record, state, now, ttl, known)
  kw_index_finished(record, state, now, ttl, known)  -- jobs index, attempt history (jobindex.lua)
  local r
  if known then
    -- The caller read the record's links already: a job that never had a child (no
    -- children_total: kw_child_enqueued counts every child it registers) has no children hash.
    if known.children then
      redis.call('EXPIRE', kw_children_key(record), ttl)
    end
    if not known.parent or not known.parent_prefix then
      return  -- no parent: the common case, without a table
    end
    r = {known.parent, known.parent_prefix, known.pool, known.job_id}
  else
    -- A parent that finishes: its children hash goes with its record.
    redis.call('EXPIRE', kw_children_key(record), ttl)
    r = redis.call('HMGET', record, 'parent', 'parent_prefix', 'pool', 'job_id')
  end
  if not r[1] or not r[2] then
    return
  end
  local parent_record = r[2] .. 'job:' .. r[1]
  local children = r[2] .. 'children:' .. r[1]
  local member = r[3] .. '/' .. r[4]
  local before = redis.call('HGET', children, member)
  if not before or before == 'Succeeded' or before == 'Failed' or before == 'Cancelled' then
    return  -- not registered, or counted already
  end
  redis.call('HSET', children, member, state)
  redis.call('HINCRBY', parent_record, 'children_' .. string.lower(state), 1)
  kw_counts_event(parent_record, now)
  if redis.call('HGET', parent_record, 'state') == 'Waiting' and kw_counts(parent_record).active == 0 then
    kw_continue(parent_record, now)
  end
end

local function kw_wait(record, handler, input_json, now, message)
  redis.call('HSET', record, 'state', 'Waiting', 'continuation', handler, 'continuation_input', input_json,
    'entry', '', 'updated_at', now, 'message', message)
  if kw_counts(record).active == 0 then
    kw_continue(record, now)
  end
end
