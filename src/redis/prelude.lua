-- Shared by every session script. A session hash holds its metadata in one-letter fields whose
-- values are integers (`d` deadline, `s` size, `e` expiry, `r` remember, `c` created, `l` last
-- seen), `owner`, and `v:<key>` values; a hash with `moved` instead marks a token replaced by a
-- renew or merge (`moved` = the successor's id). Records of the earlier shape hold the metadata
-- in one `meta` field (`deadline=… size=…`): read alike, rewritten in the new shape when next
-- written.
local function int(s)
  if type(s) == 'string' and #s <= 16 and string.match(s, '^%-?%d+$') then return tonumber(s) end
  return nil
end
local MAX_TIME = 253402300799999
-- The metadata fields, in the order `live` reads them, and their names in the old `meta` text.
local FIELDS_OF_META = {'d', 's', 'e', 'r', 'c', 'l'}
local NAMES = {d = 'deadline', s = 'size', e = 'expiry', r = 'remember', c = 'created', l = 'seen'}
local META_FIELDS = #FIELDS_OF_META
local function corrupt() return nil, redis.error_reply('MALFORMED meta') end
-- The grammar, shared with the Rust decoder (`redis/decode/meta.rs`): each value an integer
-- (`-?[0-9]+`, at most 16 characters), a deadline; times within year 0..9999 in Unix ms
-- (`deadline`, `expiry`, `created`, `seen`), `size` >= 0, `remember` 0 or 1. Anything else is
-- corrupt. Fills the defaults.
local function checked(m)
  local function bad(v, lo, hi) return v ~= nil and (v < lo or v > hi) end
  if not m.deadline or bad(m.deadline, 0, MAX_TIME) or bad(m.expiry, 0, MAX_TIME)
    or bad(m.created, 0, MAX_TIME) or bad(m.seen, 0, MAX_TIME)
    or bad(m.size, 0, 2^53) or bad(m.remember, 0, 1) then
    return corrupt()
  end
  m.size = m.size or 0
  m.remember = m.remember or 0
  m.expiry = m.expiry or m.deadline
  return m
end
-- The old `meta` text: pairs separated by spaces, each `[a-z]+=<integer>`, no name twice
-- (unknown names allowed).
local function parse_meta(text)
  local seen, m = {}, {had = {meta = true}}
  for pair in string.gmatch(text, '[^ ]+') do
    local name, value = string.match(pair, '^([a-z]+)=(%-?%d+)$')
    if not name or seen[name] or not int(value) then return corrupt() end
    seen[name] = int(value)
  end
  for _, name in pairs(NAMES) do m[name] = seen[name] end
  return checked(m)
end
-- The metadata from `live`'s HMGET reply (the fields of FIELDS_OF_META, then `meta`): parsed,
-- `false` when the hash holds none, or nil plus an error reply when corrupt.
local function parse_stored(stored)
  local m, any = {had = {}}, false
  for i, field in ipairs(FIELDS_OF_META) do
    local text = stored[i]
    if text then
      m[NAMES[field]], m.had[field], any = int(text), true, true
      if not m[NAMES[field]] then return corrupt() end
    end
  end
  local old = stored[META_FIELDS + 1]
  if old and any then return corrupt() end
  if old then return parse_meta(old) end
  if not any then return false end
  return checked(m)
end
-- Writes `m` into the session `key`'s metadata fields (with the field/value pairs given after
-- it, in the same HSET), and drops those it held that `m` no longer has (and an old `meta`).
-- Numbers go as `%d` text: Lua's own formatting would round.
local function write_meta(key, m, ...)
  local set = {'d', string.format('%d', m.deadline), 's', string.format('%d', m.size), ...}
  local written = {d = true, s = true}
  local function put(field, value)
    set[#set + 1], set[#set + 2], written[field] = field, string.format('%d', value), true
  end
  if m.expiry ~= m.deadline then put('e', m.expiry) end
  if m.remember == 1 then put('r', 1) end
  if m.created then put('c', m.created) end
  if m.seen then put('l', m.seen) end
  redis.call('HSET', key, unpack(set))
  local gone = {}
  for field in pairs(m.had or {}) do
    if not written[field] then gone[#gone + 1] = field end
  end
  if #gone > 0 then redis.call('HDEL', key, unpack(gone)) end
end
-- The live session at `key`: its parsed meta and the requested fields (a table, in the order
-- asked), `nil` when there is none (a record past its expiry is deleted on the way), or nil
-- plus an error reply when corrupt.
local function live(key, now, ...)
  local stored = redis.call('HMGET', key, 'd', 's', 'e', 'r', 'c', 'l', 'meta', 'moved', ...)
  if stored[META_FIELDS + 2] then return nil end
  local m, err = parse_stored(stored)
  if m == false then
    -- No key: no session. A hash with neither metadata nor `moved` is not ours: corrupt, as
    -- the Rust decoder reads it.
    if redis.call('EXISTS', key) == 1 then return corrupt() end
    return nil
  end
  if not m then return nil, err end
  if m.expiry <= now then
    -- Past its expiry but still held (a PERSIST, or a clock ahead of the writer's): gone.
    redis.call('DEL', key)
    return nil
  end
  local asked = {}
  for i = 1, select('#', ...) do asked[i] = stored[META_FIELDS + 2 + i] end
  return m, asked
end
-- Runs `cmd key list[first..last]` in batches: Lua's unpack stops at about 8,000 items.
-- (`first` to `last` always spans whole field/value pairs for HSET: batches of 1000 keep them.)
local function batched(cmd, key, list, first, last)
  for i = first, last, 1000 do
    redis.call(cmd, key, unpack(list, i, math.min(i + 999, last)))
  end
end
