-- Hand a delivered entry back to the pool: a fresh entry at the end of its
-- stream, the old one acknowledged and deleted, the record Queued again.
-- Used for graceful shutdown (attempt not counted) and for leases that
-- expired because their worker died (attempt counted).
--
-- KEYS[1] job stream   KEYS[2] record   KEYS[3] events stream
-- ARGV[1] entry id   ARGV[2] group   ARGV[3] owner that must hold the entry
-- ARGV[4] '1' to uncount the attempt   ARGV[5] now   ARGV[6] message for the record
-- Returns the new entry id, '' when the entry was dropped (job gone, finished or
-- belonging to another delivery), or false when the owner does not hold it.
local id = ARGV[1]
local pending = redis.call('XPENDING', KEYS[1], ARGV[2], id, id, 1)
if #pending == 0 or pending[1][2] ~= ARGV[3] then
  return false
end
local rec = redis.call('HMGET', KEYS[2], 'state', 'entry', 'msg', 'attempts')
redis.call('XACK', KEYS[1], ARGV[2], id)
redis.call('XDEL', KEYS[1], id)
local state = rec[1]
if not state or rec[2] ~= id or state == 'Succeeded' or state == 'Failed' or state == 'Cancelled' then
  return ''
end
local new_id = redis.call('XADD', KEYS[1], '*', 'v', '1', 'm', rec[3])
local attempts = tonumber(rec[4]) or 0
if ARGV[4] == '1' and state == 'Running' and attempts > 0 then
  attempts = attempts - 1
end
redis.call('HSET', KEYS[2], 'state', 'Queued', 'entry', new_id, 'attempts', attempts,
  'updated_at', ARGV[5], 'message', ARGV[6])
if state == 'Running' then
  local r = redis.call('HMGET', KEYS[2], 'job_id', 'uid', 'namespace', 'pool')
  redis.call('XADD', KEYS[3], '*', 'e', cjson.encode({job_id = r[1], uid = r[2], namespace = r[3],
    pool = r[4], state = 'Queued', attempt = attempts, at = tonumber(ARGV[5]), message = ARGV[6]}))
end
return new_id
