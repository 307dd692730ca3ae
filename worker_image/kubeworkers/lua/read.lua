-- Read up to COUNT new entries from the pool's streams, strictly in priority
-- order (high, then normal, then low), through the consumer group.
-- Never blocks: the worker falls back to a blocking XREADGROUP when this is empty.
--
-- KEYS: the job streams, highest priority first
-- ARGV[1] group   ARGV[2] consumer   ARGV[3] count
-- Returns a flat list: stream index (1-based), entry id, message JSON, ...
local remaining = tonumber(ARGV[3])
local out = {}
for i, stream in ipairs(KEYS) do
  if remaining <= 0 then
    break
  end
  local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', remaining, 'STREAMS', stream, '>')
  if reply then
    for _, entry in ipairs(reply[1][2]) do
      local fields = entry[2]
      local msg = ''
      for j = 1, #fields, 2 do
        if fields[j] == 'm' then
          msg = fields[j + 1]
        end
      end
      out[#out + 1] = i
      out[#out + 1] = entry[1]
      out[#out + 1] = msg
      remaining = remaining - 1
    end
  end
end
return out
