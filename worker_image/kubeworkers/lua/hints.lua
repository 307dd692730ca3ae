-- The job id -> pools hints (kubeworkers.protocol.job_pool_key) of a bulk enqueue, in one call:
-- for each key, SADD its pool and set the hint's TTL, as the two commands a single enqueue sends.
-- Every key is in one namespace's slot (kw:{<namespace>}:jobpools:<job id>), never a pool's: this
-- script is sent beside enqueue.lua's calls, in their round trip, not from inside them.
--
-- KEYS[i] the hint of a job   ARGV[1] the TTL in seconds   ARGV[1 + i] the pool of KEYS[i]
-- Returns the number of hints written.
local ttl = ARGV[1]
for i, key in ipairs(KEYS) do
  redis.call('SADD', key, ARGV[i + 1])
  redis.call('EXPIRE', key, ttl)
end
return #KEYS
