-- Move retries whose backoff has passed from the delayed set back onto their
-- priority stream, and point their records at the new entry.
--
-- KEYS[1] delayed set   KEYS[2..5] critical, high, normal, low streams
-- ARGV[1] now   ARGV[2] max per call   ARGV[3] record key prefix ('kw:{ns/pool}:job:')
-- Returns the number of jobs moved.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local streams = {critical = KEYS[2], high = KEYS[3], normal = KEYS[4], low = KEYS[5]}
for _, msg in ipairs(due) do
  local ok, decoded = pcall(cjson.decode, msg)
  local stream = KEYS[4]
  if ok and decoded['priority'] and streams[decoded['priority']] then
    stream = streams[decoded['priority']]
  end
  local id
  if ok then
    id = redis.call('XADD', stream, '*', 'v', '1', 'm', msg, 'j', decoded['job_id'] or '',
      'u', decoded['uid'] or '', 'h', decoded['handler'] or '')
  else
    id = redis.call('XADD', stream, '*', 'v', '1', 'm', msg)
  end
  if ok and decoded['job_id'] then
    local record = ARGV[3] .. decoded['job_id']
    if redis.call('HGET', record, 'uid') == decoded['uid'] then
      redis.call('HSET', record, 'entry', id)
    end
  end
  redis.call('ZREM', KEYS[1], msg)
end
return #due
