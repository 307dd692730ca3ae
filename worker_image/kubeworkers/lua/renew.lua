#!lua flags=allow-oom
-- Renew the leases of entries this worker holds (reset their idle time), and
-- report the ones it no longer holds (reclaimed after an expired lease).
--
-- KEYS[1] job stream
-- ARGV[1] group   ARGV[2] consumer   ARGV[3..] entry ids
-- Returns the ids no longer held by the consumer.
-- allow-oom: renewing a lease only resets an entry's idle time; refusing it at maxmemory
-- would hand a live worker's job to another worker (see scripts.py).
local lost = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if #pending == 1 and pending[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
  else
    lost[#lost + 1] = id
  end
end
return lost
