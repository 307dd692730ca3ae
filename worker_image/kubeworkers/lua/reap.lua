#!lua flags=allow-oom
-- Claim a pool's expired leases, on Redis' own clock, and never right after an outage.
--
-- Every heartbeat of every worker calls this with count 0, which only records the pool's
-- pulse: the last time (Redis' clock) a worker reached Redis. A gap in the pulse longer
-- than gap_ms means no worker could reach Redis (Redis was down, restarting or paused, or
-- the pool had no worker): the call that sees the gap records that Redis is back, and for
-- one full lease after that nothing is claimed, so that live workers renew their leases
-- first. Otherwise entries idle (not renewed) for longer than the lease are claimed into the
-- reaper's consumer, for the reaper to hand back to their streams.
--
-- KEYS[1] pulse hash of the pool (fields last and resumed: Redis time in ms)
-- KEYS[2..] the pool's job streams, highest priority first
-- ARGV[1] group: the consumer group
-- ARGV[2] reaper: the consumer expired entries are claimed into
-- ARGV[3] lease_ms: an entry not renewed for this long has expired
-- ARGV[4] gap_ms: a longer gap in the pulse is an outage
-- ARGV[5] count: most entries to claim (0: record the pulse only)
-- Returns a flat list: status, wait_ms, then per claimed entry: stream, entry, job_id
-- (status 'pulse' for count 0; 'wait' while Redis has been back for less than a lease,
-- wait_ms to go; 'claimed' otherwise). Entries without a readable job id are dropped.
-- allow-oom: the pulse overwrites two fields and a claim hands back an entry already
-- counted; refusing the pulse at maxmemory would fail the heartbeat that renews leases.
local group, reaper = ARGV[1], ARGV[2]
local lease, gap, count = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local pulse = redis.call('HMGET', KEYS[1], 'last', 'resumed')
local last, resumed = tonumber(pulse[1]), tonumber(pulse[2]) or 0
if not last or now - last > gap then
  resumed = now
  redis.call('HSET', KEYS[1], 'resumed', now)
end
redis.call('HSET', KEYS[1], 'last', now)
redis.call('PEXPIRE', KEYS[1], lease * 20)
if count <= 0 then
  return {'pulse', 0}
end
if now - resumed < lease then
  return {'wait', lease - (now - resumed)}
end
local out = {'claimed', 0}
for index = 2, #KEYS do
  local stream, cursor = KEYS[index], '0-0'
  repeat
    local reply = redis.call('XAUTOCLAIM', stream, group, reaper, lease, cursor, 'COUNT', count)
    cursor = reply[1]
    for _, entry in ipairs(reply[2]) do
      local fields, job_id = entry[2], nil
      for j = 1, #fields, 2 do
        if fields[j] == 'j' and fields[j + 1] ~= '' then
          job_id = fields[j + 1]
        elseif fields[j] == 'm' and not job_id then
          local ok, msg = pcall(cjson.decode, fields[j + 1])
          if ok and type(msg) == 'table' and type(msg['job_id']) == 'string' then
            job_id = msg['job_id']
          end
        end
      end
      if job_id then
        out[#out + 1] = index - 1
        out[#out + 1] = entry[1]
        out[#out + 1] = job_id
        count = count - 1
      else
        redis.call('XACK', stream, group, entry[1])
        redis.call('XDEL', stream, entry[1])
      end
    end
    if reply[3] and #reply[3] > 0 then
      -- Entries deleted while pending: nothing is left to run.
      redis.call('XACK', stream, group, unpack(reply[3]))
    end
  until cursor == '0-0' or count <= 0
end
return out
