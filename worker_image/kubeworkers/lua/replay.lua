-- Replay a dead-lettered job: a fresh entry on its stream, its record Queued
-- with its attempts reset, the dead-letter entry removed.
--
-- KEYS[1] dead-letter stream   KEYS[2] job stream   KEYS[3] record   KEYS[4] cancel flag
-- KEYS[5] events stream
-- ARGV[1] dead-letter entry id   ARGV[2] message JSON   ARGV[3] now
-- Returns the new entry id, or false when the dead-letter entry does not exist.
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then
  return false
end
local msg = cjson.decode(ARGV[2])
local id = redis.call('XADD', KEYS[2], '*', 'v', '1', 'm', ARGV[2], 'j', msg['job_id'], 'u', msg['uid'],
  'h', msg['handler'])
redis.call('DEL', KEYS[4])
redis.call('PERSIST', KEYS[3])
redis.call('HSET', KEYS[3], 'job_id', msg['job_id'], 'uid', msg['uid'], 'namespace', msg['namespace'],
  'pool', msg['pool'], 'handler', msg['handler'], 'priority', msg['priority'] or 'normal',
  'state', 'Queued', 'attempts', 0, 'entry', id, 'updated_at', ARGV[3], 'msg', ARGV[2],
  'message', 'replayed from the dead-letter stream', 'error', '', 'output', '', 'finished_at', '')
redis.call('XADD', KEYS[5], 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'e', cjson.encode({job_id = msg['job_id'], uid = msg['uid'],
  namespace = msg['namespace'], pool = msg['pool'], state = 'Queued', attempt = 0,
  at = tonumber(ARGV[3]), message = 'replayed from the dead-letter stream'}))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
