-- Shared by every session script. A session hash holds its metadata in one-letter fields whose
-- values are integers (`d` deadline, `s` size, `e` expiry, `r` remember, `c` created, `l` last
-- seen), `owner`, and `v:<key>` values; a hash with `moved` instead marks a token replaced by a
-- renew or merge (`moved` = the successor's id). Records of the earlier shape hold the metadata
-- in one `meta` field (`deadline=… size=…`): read alike, rewritten in the new shape when next
-- written.
--
-- Every script pays for what this file defines on every call, so it builds no table up front,
-- and the metadata is read and written field by field, with no loop over field names (a commit
-- once spent as long in such Lua as in its Redis commands).
local find, format, tonumber, type = string.find, string.format, tonumber, type
local function int(s)
  if type(s) == 'string' and #s <= 16 and find(s, '^%-?%d+$') then return tonumber(s) end
  return nil
end
local MAX_TIME = 253402300799999
local function corrupt() return nil, redis.error_reply('MALFORMED meta') end
-- The grammar, shared with the Rust decoder (`redis/decode/meta.rs`): each value an integer
-- (`-?[0-9]+`, at most 16 characters), a deadline; times within year 0..9999 in Unix ms
-- (`deadline`, `expiry`, `created`, `seen`), `size` >= 0, `remember` 0 or 1. Anything else is
-- corrupt. Fills the defaults.
local function checked(m)
  local d, e, c, l, s, r = m.deadline, m.expiry, m.created, m.seen, m.size, m.remember
  if not d or d < 0 or d > MAX_TIME or (e and (e < 0 or e > MAX_TIME))
    or (c and (c < 0 or c > MAX_TIME)) or (l and (l < 0 or l > MAX_TIME))
    or (s and (s < 0 or s > 2^53)) or (r and r ~= 0 and r ~= 1) then
    return corrupt()
  end
  m.size = s or 0
  m.remember = r or 0
  m.expiry = e or d
  return m
end
-- The old `meta` text: pairs separated by spaces, each `[a-z]+=<integer>`, no name twice
-- (unknown names allowed).
local function parse_meta(text)
  local seen = {}
  for pair in string.gmatch(text, '[^ ]+') do
    local name, value = string.match(pair, '^([a-z]+)=(%-?%d+)$')
    if not name or seen[name] or not int(value) then return corrupt() end
    seen[name] = int(value)
  end
  return checked({deadline = seen.deadline, size = seen.size, expiry = seen.expiry,
    remember = seen.remember, created = seen.created, seen = seen.seen, had = {meta = true}})
end
-- The metadata from `live`'s HMGET reply (`d s e r c l meta`, absent ones `false`): parsed,
-- `false` when the hash holds none, or nil plus an error reply when corrupt. `had` lists the
-- optional fields the hash holds (those a write may have to drop).
local function parse_stored(stored)
  local d, s, e, r, c, l, old = stored[1], stored[2], stored[3], stored[4], stored[5],
    stored[6], stored[7]
  if not (d or s or e or r or c or l) then
    if old then return parse_meta(old) end
    return false
  end
  if old then return corrupt() end
  local m = {deadline = int(d), size = int(s), expiry = int(e), remember = int(r),
    created = int(c), seen = int(l)}
  if (d and not m.deadline) or (s and not m.size) or (e and not m.expiry)
    or (r and not m.remember) or (c and not m.created) or (l and not m.seen) then
    return corrupt()
  end
  if e or r or c or l then m.had = {e = e, r = r, c = c, l = l} end
  return checked(m)
end
-- The field/value pairs that store `m` (then `owner`, when given) in one HSET, and their count.
-- Numbers go as `%d` text: Lua's own formatting would round.
local function meta_pairs(m, owner)
  local set, n = {'d', format('%d', m.deadline), 's', format('%d', m.size)}, 4
  if owner then set[5], set[6], n = 'owner', owner, 6 end
  if m.expiry ~= m.deadline then set[n + 1], set[n + 2], n = 'e', format('%d', m.expiry), n + 2 end
  if m.remember == 1 then set[n + 1], set[n + 2], n = 'r', '1', n + 2 end
  if m.created then set[n + 1], set[n + 2], n = 'c', format('%d', m.created), n + 2 end
  if m.seen then set[n + 1], set[n + 2], n = 'l', format('%d', m.seen), n + 2 end
  return set, n
end
-- Drops the metadata fields the session `key` was read with (`m.had`) that `m` no longer has,
-- and an old `meta`.
local function drop_unwritten(key, m)
  local had = m.had
  if not had then return end
  local gone, n = {}, 0
  if had.e and m.expiry == m.deadline then n = n + 1; gone[n] = 'e' end
  if had.r and m.remember ~= 1 then n = n + 1; gone[n] = 'r' end
  if had.c and not m.created then n = n + 1; gone[n] = 'c' end
  if had.l and not m.seen then n = n + 1; gone[n] = 'l' end
  if had.meta then n = n + 1; gone[n] = 'meta' end
  if n > 0 then redis.call('HDEL', key, unpack(gone)) end
end
-- The live session at `key`: its parsed meta and the value of `field`, nil when there is none
-- (a record past its expiry is deleted on the way), or nil plus an error reply when corrupt.
local function live(key, now, field)
  local stored = redis.call('HMGET', key, 'd', 's', 'e', 'r', 'c', 'l', 'meta', 'moved', field)
  if stored[8] then return nil end
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
  return m, stored[9]
end
-- Runs `cmd key list[first..last]` in batches: Lua's unpack stops at about 8,000 items.
-- (`first` to `last` always spans whole field/value pairs for HSET: batches of 1000 keep them.)
local function batched(cmd, key, list, first, last)
  for i = first, last, 1000 do
    redis.call(cmd, key, unpack(list, i, math.min(i + 999, last)))
  end
end
