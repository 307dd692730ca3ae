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
-- handler is the job's handler (read by the caller with the fields it checks anyway); duration is
-- decimal text, or '' (or nil) for an attempt whose handler never ran. kw_stats and kw_stats_finish
-- return the duration as a number (nil: none), so the caller need not convert it again.
--
-- The counts are added up in the script and written by kw_stats_flush() once per call, at the
-- end of settle.lua: one HINCRBY per field, one HINCRBYFLOAT per handler and one EXPIRE per
-- minute hash however many attempts the batch ended (a script is atomic, so nobody sees the
-- difference; the sums are the same).
local kw_stats_pending = {}  -- key -> {field -> count}
local kw_stats_seconds = {}  -- key -> {field -> seconds}
local kw_stats_keys = {}     -- prefix .. now -> key, and handler -> its field names (built once per call)
local kw_stats_fields = {}

local kw_stats_last = {}     -- the last prefix, now and key (a call's writes share them)

local function kw_stats(prefix, now, handler, outcome, duration)
  local key
  if kw_stats_last[1] == prefix and kw_stats_last[2] == now then
    key = kw_stats_last[3]
  else
    key = kw_stats_keys[prefix .. now]
    if not key then
      key = prefix .. 'stats:m:' .. math.floor(tonumber(now) / 60)
      kw_stats_keys[prefix .. now] = key
    end
    kw_stats_last[1], kw_stats_last[2], kw_stats_last[3] = prefix, now, key
  end
  handler = handler or ''
  local names = kw_stats_fields[handler]
  if not names then
    names = {dsum = handler .. '|dsum'}
    kw_stats_fields[handler] = names
  end
  local counts = kw_stats_pending[key]
  if not counts then
    counts = {}
    kw_stats_pending[key] = counts
    kw_stats_seconds[key] = {}
  end
  local field = names[outcome]
  if not field then
    field = handler .. '|' .. outcome
    names[outcome] = field
  end
  counts[field] = (counts[field] or 0) + 1
  local seconds = nil
  if duration and duration ~= '' then
    seconds = tonumber(duration)
    local bucket = #DURATION_BUCKETS
    for i = 1, bucket do
      if seconds <= DURATION_BUCKETS[i] then
        bucket = i - 1
        break
      end
    end
    local sums = kw_stats_seconds[key]
    sums[names.dsum] = (sums[names.dsum] or 0) + seconds
    field = names[bucket]
    if not field then
      field = handler .. '|b' .. bucket
      names[bucket] = field
    end
    counts[field] = (counts[field] or 0) + 1
  end
  return seconds
end

-- Write what kw_stats() counted in this call (settle.lua calls it once, last).
local function kw_stats_flush()
  for key, counts in pairs(kw_stats_pending) do
    for field, n in pairs(counts) do
      redis.call('HINCRBY', key, field, n)
    end
    for field, seconds in pairs(kw_stats_seconds[key]) do
      redis.call('HINCRBYFLOAT', key, field, string.format('%.6f', seconds))
    end
    redis.call('EXPIRE', key, STATS_TTL_S)
  end
  kw_stats_pending, kw_stats_seconds = {}, {}
end

local KW_STATS_OUTCOMES = {Succeeded = 'succeeded', Failed = 'failed', Cancelled = 'cancelled'}

-- The end of a job (settle.lua's finish write w): its duration counts when a handler ran.
local function kw_stats_finish(prefix, now, handler, w)
  local ran = w.state == 'Succeeded' or (w.state == 'Failed' and w.ran)
  return kw_stats(prefix, now, handler, KW_STATS_OUTCOMES[w.state] or 'failed', ran and w.duration or nil)
end
