-- The queue positions of jobs of one pool (position.lua says how they are counted), and the
-- pool's take counter, for the operator's Job statuses and Client.position().
--
-- ARGV[1] prefix: the pool's key prefix 'kw:{ns/pool}:'   ARGV[2..] job ids
-- Returns {taken, position per job id}: taken is the entries the workers' group has been
-- handed over all streams (summed entries-read; -1 when a stream's count is unknown), so two
-- calls measure the take rate; a position is -1 for a job that is not waiting on a stream
-- (unknown, Running, finished, delayed, or waiting out a retry's backoff).
--! include position
local prefix = ARGV[1]
local taken = 0
for _, level in ipairs(KW_LEVELS) do
  local s = kw_stream(prefix, level)
  if not s.read then
    taken = -1
  elseif taken >= 0 and s.read then
    taken = taken + s.read
  end
end
local positions = {}
for i = 2, #ARGV do
  local rec = redis.call('HMGET', prefix .. 'job:' .. ARGV[i], 'state', 'priority', 'entry', 'entry_seq')
  positions[#positions + 1] = kw_position(prefix, rec[1], rec[2], rec[3], rec[4])
end
return {taken, positions}
