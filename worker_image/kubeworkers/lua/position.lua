-- Queue positions, a library spliced into enqueue.lua and positions.lua (docs/protocol.md,
-- *Queue positions*): how many jobs a pool's workers would take before a queued job if they
-- took in strict priority order, in a bounded number of commands whatever the queue's length.
--
-- position = the undelivered entries of every higher level's stream
--          + the undelivered entries ahead of the job's own entry on its stream.
-- A stream's undelivered entries: the group's lag (XINFO GROUPS), else XLEN - pending (acked
-- entries are deleted, so what is left is pending or undelivered), or XLEN with no group yet.
-- Ahead of an entry: from its number on the stream (`entry_seq`, written by enqueue.lua: the
-- stream's entries-added after its XADD) minus the group's entries-read, when both are known;
-- else counted (XRANGE … COUNT KW_POSITION_COUNT) from the front, or from the back; past
-- KW_POSITION_COUNT on both sides it is estimated from the entry ids' times.
local KW_LEVELS = {'critical', 'high', 'normal', 'low'}
local KW_POSITION_COUNT = 100
local kw_stream_cache = {}

-- What a pool's stream says about its queue: undelivered, last delivered id, entries read.
local function kw_stream(prefix, level)
  local key = prefix .. 'jobs:' .. level
  local s = kw_stream_cache[key]
  if s then
    return s
  end
  -- No group yet: nothing was ever delivered, nor deleted (only a worker's take deletes), so
  -- it reads as a group at 0-0 that read nothing.
  s = {key = key, undelivered = 0, last = nil, read = 0}
  if redis.call('EXISTS', key) == 1 then
    local length = redis.call('XLEN', key)
    s.undelivered = length
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
      local f = {}
      for i = 1, #g, 2 do
        f[g[i]] = g[i + 1]
      end
      if f['name'] == 'workers' then
        s.last = f['last-delivered-id']
        s.read = nil
        if type(f['entries-read']) == 'number' then
          s.read = f['entries-read']
        elseif s.last == '0-0' then
          s.read = 0  -- created at 0 and never read (Redis reports no count then)
        end
        if type(f['lag']) == 'number' then
          s.undelivered = f['lag']
        else
          s.undelivered = math.max(0, length - (tonumber(f['pending']) or 0))
        end
      end
    end
  end
  kw_stream_cache[key] = s
  return s
end

-- An entry was added to a stream read before in this call: keep its figures true.
local function kw_stream_added(prefix, level)
  local s = kw_stream_cache[prefix .. 'jobs:' .. level]
  if s then
    s.undelivered = s.undelivered + 1
  end
end

-- The number the entry just added to this stream has (entries-added), or nil when unknown.
local function kw_entry_seq(prefix, level)
  local s = kw_stream(prefix, level)
  if s.read then
    return s.read + s.undelivered
  end
  return nil
end

local function kw_entry_ms(id)
  return tonumber(string.match(id, '^(%d+)')) or 0
end

-- Undelivered entries ahead of `entry` on its stream.
local function kw_ahead(s, entry, seq)
  if seq and s.read then
    return math.max(0, math.min(s.undelivered - 1, seq - s.read - 1))
  end
  local start = s.last and ('(' .. s.last) or '-'
  local front = redis.call('XRANGE', s.key, start, '(' .. entry, 'COUNT', KW_POSITION_COUNT)
  if #front < KW_POSITION_COUNT then
    return #front
  end
  local back = redis.call('XRANGE', s.key, '(' .. entry, '+', 'COUNT', KW_POSITION_COUNT)
  if #back < KW_POSITION_COUNT then
    return math.max(#front, s.undelivered - 1 - #back)
  end
  -- Deep inside a long queue: share the undelivered entries out by time, between the first
  -- undelivered entry and the newest one (an estimate; exact only for steady arrivals).
  local head = kw_entry_ms(front[1][1])
  local tail = kw_entry_ms(redis.call('XREVRANGE', s.key, '+', '-', 'COUNT', 1)[1][1])
  local guess = math.floor(s.undelivered * (kw_entry_ms(entry) - head) / math.max(1, tail - head))
  return math.max(KW_POSITION_COUNT, math.min(s.undelivered - 1 - KW_POSITION_COUNT, guess))
end

-- The undelivered entries of the levels above `level`, and `level`'s stream (nil for no such level).
local function kw_above(prefix, level)
  local total = 0
  for _, l in ipairs(KW_LEVELS) do
    local s = kw_stream(prefix, l)
    if l == level then
      return total, s
    end
    total = total + s.undelivered
  end
  return total, nil
end

-- The position of the entry enqueue.lua just added to the `level` stream (the stream read after
-- the XADD, or kept true by kw_stream_added): every undelivered entry of its stream is ahead of
-- it, as of the higher levels', so it is counted without reading the entry's number back.
local function kw_tail_position(prefix, level)
  local total, s = kw_above(prefix, level)
  if not s then
    return -1
  end
  return total + math.max(0, s.undelivered - 1)
end

-- The position of a job whose record says it is Queued on `entry` of the `priority` stream
-- (`entry_seq` as enqueue.lua wrote it, or false); -1 when it is not waiting on a stream.
local function kw_position(prefix, state, priority, entry, entry_seq)
  if state ~= 'Queued' or not entry or entry == '' then
    return -1
  end
  local total, s = kw_above(prefix, priority or 'normal')
  if not s then
    return -1
  end
  local seq = nil
  if entry_seq then
    local at, n = string.match(entry_seq, '^(%S+) (%d+)$')
    if at == entry then
      seq = tonumber(n)
    end
  end
  return total + kw_ahead(s, entry, seq)
end
