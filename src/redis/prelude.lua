-- Shared by every session script. A session hash holds `meta` (space-separated `name=value`
-- pairs), `owner`, and `v:<key>` values; a hash with `moved` instead of `meta` marks a token
-- replaced by a renew or merge (`moved` = the successor's id).
local function int(s)
  if type(s) == 'string' and #s <= 16 and string.match(s, '^%-?%d+$') then return tonumber(s) end
  return nil
end
local MAX_TIME = 253402300799999
-- `meta` parsed, or an error reply. The grammar, shared with the Rust decoder: pairs separated by
-- spaces, each `[a-z]+=-?[0-9]+` (at most 16 digits), no name twice, a `deadline`; times within
-- year 0..9999 in Unix ms (`deadline`, `expiry`, `created`, `seen`), `size` >= 0, `remember` 0 or
-- 1. Anything else is corrupt.
local function parse_meta(text)
  local m = {}
  for pair in string.gmatch(text, '[^ ]+') do
    local name, value = string.match(pair, '^([a-z]+)=(%-?%d+)$')
    if not name or m[name] or not int(value) then
      return nil, redis.error_reply('MALFORMED meta')
    end
    m[name] = int(value)
  end
  local function bad(v, lo, hi) return v ~= nil and (v < lo or v > hi) end
  if not m.deadline or bad(m.deadline, 0, MAX_TIME) or bad(m.expiry, 0, MAX_TIME)
    or bad(m.created, 0, MAX_TIME) or bad(m.seen, 0, MAX_TIME)
    or bad(m.size, 0, 2^53) or bad(m.remember, 0, 1) then
    return nil, redis.error_reply('MALFORMED meta')
  end
  m.size = m.size or 0
  m.remember = m.remember or 0
  m.expiry = m.expiry or m.deadline
  return m
end
local function format_meta(m)
  local text = string.format('deadline=%d size=%d', m.deadline, m.size)
  if m.expiry ~= m.deadline then text = text .. string.format(' expiry=%d', m.expiry) end
  if m.remember == 1 then text = text .. ' remember=1' end
  if m.created then text = text .. string.format(' created=%d', m.created) end
  if m.seen then text = text .. string.format(' seen=%d', m.seen) end
  return text
end
-- The live session at `key`: its parsed meta and the requested fields, `nil` when there is none
-- (a record past its expiry is deleted on the way), or nil plus an error reply when corrupt.
local function live(key, now, ...)
  local stored = redis.call('HMGET', key, 'meta', 'moved', ...)
  if stored[2] then return nil end
  if not stored[1] then
    -- No key: no session. A hash with neither `meta` nor `moved` is not ours: corrupt, as the
    -- Rust decoder reads it.
    if redis.call('EXISTS', key) == 1 then return nil, redis.error_reply('MALFORMED meta') end
    return nil
  end
  local m, err = parse_meta(stored[1])
  if not m then return nil, err end
  if m.expiry <= now then
    -- Past its expiry but still held (a PERSIST, or a clock ahead of the writer's): gone.
    redis.call('DEL', key)
    return nil
  end
  return m, stored
end
-- Runs `cmd key list[first..last]` in batches: Lua's unpack stops at about 8,000 items.
-- (`first` to `last` always spans whole field/value pairs for HSET: batches of 1000 keep them.)
local function batched(cmd, key, list, first, last)
  for i = first, last, 1000 do
    redis.call(cmd, key, unpack(list, i, math.min(i + 999, last)))
  end
end
