-- Per-minute, per-handler statistics of ended attempts, for `kubeworkers stats`
-- (kubeworkers/stats.py reads them). Spliced into settle.lua.
--
-- Key: <prefix>stats:m:<unix minute> (PoolKeys.stats_minute), a hash expiring STATS_TTL_S
-- after its last write, a little over the longest window `stats` answers for.
-- Fields, counting exactly what the worker's metrics count (runner.py), so the two agree:
--   <handler>|<outcome>  attempts that ended so: succeeded (a sequence's step too), failed (the
--                        job ended Failed: kubeworkers_dead_lettered_total), retried, waiting,
--                        cancelled
--   <handler>|dsum       sum of their durations, seconds (kubeworkers_job_duration_seconds_sum)
--   <handler>|b<i>       attempts whose duration fell in bucket i (0-based, not cumulative):
--                        DURATION_BUCKETS[i] (prelude constant, protocol.DURATION_BUCKETS_S), the
--                        last index (#DURATION_BUCKETS) past the largest bound (+Inf)
-- record is the job's record (its handler field names the handler); duration is decimal text, or '' (or nil) for an attempt whose handler never ran.
local function kw_stats(prefix, now, record, outcome, duration)
  local key = prefix .. 'stats:m:' .. math.floor(tonumber(now) / 60)
  local handler = redis.call('HGET', record, 'handler') or ''
  redis.call('HINCRBY', key, handler .. '|' .. outcome, 1)
  if duration and duration ~= '' then
    local seconds = tonumber(duration)
    local bucket = #DURATION_BUCKETS
    for i, bound in ipairs(DURATION_BUCKETS) do
      if seconds <= bound then
        bucket = i - 1
        break
      end
    end
    redis.call('HINCRBYFLOAT', key, handler .. '|dsum', duration)
    redis.call('HINCRBY', key, handler .. '|b' .. bucket, 1)
  end
  redis.call('EXPIRE', key, STATS_TTL_S)
end

local KW_STATS_OUTCOMES = {Succeeded = 'succeeded', Failed = 'failed', Cancelled = 'cancelled'}

-- The end of a job (settle.lua's finish write w): its duration counts when a handler ran.
local function kw_stats_finish(prefix, now, record, w)
  local ran = w.state == 'Succeeded' or (w.state == 'Failed' and w.ran)
  kw_stats(prefix, now, record, KW_STATS_OUTCOMES[w.state] or 'failed', ran and w.duration or nil)
end
