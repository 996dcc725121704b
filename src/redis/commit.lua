-- Applies a Change to the session KEYS[1]. Returns nil when an update finds no live session, an
-- error `TOOLARGE <bytes>` (changing nothing) when the values would exceed the limit and grow,
-- else {expiry ms, remember, owner}. Times are the app's clock; the key's TTL is set relative
-- to `now`, so a Redis clock ahead of or behind the app's never shortens it.
--
-- ARGV, by position (`Arg` in script.rs names them alike, in the same order):
--   MODE       `c` (create) or `u` (update)
--   NOW        the app's time, Unix ms
--   IDLE_TTL   ms an unused session lives from now; 0 = no idle timeout
--   DEADLINE   a new absolute deadline, Unix ms; empty = keep (an update only)
--   REMEMBER   `0`|`1` to set the flag; empty = keep
--   CLEARED    `1` to drop every stored value first
--   OWNER      a new owner; empty = keep
--   MAX_BYTES  the size limit of the values; 0 = none
--   USER_AGENT a user agent to record with an owned session (field `ua`); empty = keep
--   IP         a client IP to record with an owned session (field `ip`); empty = keep
--   REMOVED    n, the count of fields to delete
-- then, from FIELDS on, the n fields to delete, then field/value pairs to set.
local MODE, NOW, IDLE_TTL, DEADLINE, REMEMBER, CLEARED, OWNER, MAX_BYTES, USER_AGENT, IP, REMOVED =
  1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
local FIELDS = 12
local key = KEYS[1]
local now = tonumber(ARGV[NOW])
local idle = tonumber(ARGV[IDLE_TTL])
local max = tonumber(ARGV[MAX_BYTES])
local n = tonumber(ARGV[REMOVED])
local cleared = ARGV[CLEARED] == '1'
local m = {deadline = int(ARGV[DEADLINE]), remember = 0, size = 0}
local old_size, owner, created = 0, ARGV[OWNER], nil
local update = ARGV[MODE] == 'u'
-- Sizes of stored values are looked up only where there can be any.
local keep = update and not cleared
if update then
  local stored, stored_owner = live(key, now, 'owner')
  if not stored then return stored_owner or false end
  old_size = stored.size
  m.had = stored.had
  m.deadline = m.deadline or stored.deadline
  m.remember = stored.remember
  created = stored.created
  if owner == '' then owner = stored_owner or '' end
  if not cleared then m.size = stored.size end
end
if ARGV[REMEMBER] ~= '' then m.remember = tonumber(ARGV[REMEMBER]) end
-- A session tied to an owner keeps when it was tied and when it was last seen, for the
-- owner's device list.
if owner ~= '' then
  m.created = created or now
  m.seen = now
end
-- Everything is checked and computed before the first write: a script is not rolled back.
if not m.deadline or m.deadline < 0 or m.deadline > MAX_TIME then
  return redis.error_reply('MALFORMED deadline')
end
m.expiry = m.deadline
if idle > 0 and now + idle < m.expiry then m.expiry = now + idle end
if keep then
  for i = FIELDS, FIELDS + n - 1 do
    local old = redis.call('HSTRLEN', key, ARGV[i])
    if old > 0 then m.size = m.size - old - #ARGV[i] + 2 end
  end
end
for i = FIELDS + n, #ARGV, 2 do
  if keep then
    local old = redis.call('HSTRLEN', key, ARGV[i])
    if old > 0 then m.size = m.size - old - #ARGV[i] + 2 end
  end
  m.size = m.size + #ARGV[i] - 2 + #ARGV[i + 1]
end
if max > 0 and m.size > max and m.size > old_size then
  return redis.error_reply('TOOLARGE ' .. m.size)
end
local remember = m.remember == 1 and '1' or '0'
if m.expiry <= now then
  redis.call('DEL', key)
  return {m.expiry, remember, owner}
end
if cleared then
  local gone = {}
  for _, field in ipairs(redis.call('HKEYS', key)) do
    if string.sub(field, 1, 2) == 'v:' then gone[#gone + 1] = field end
  end
  batched('HDEL', key, gone, 1, #gone)
end
batched('HDEL', key, ARGV, FIELDS, FIELDS + n - 1)
-- One HSET for the metadata, the owner, the values and the client, unless there are so many
-- values that they go in batches after it.
local set, k = meta_pairs(m, ARGV[OWNER] ~= '' and owner or nil)
local first, last = FIELDS + n, #ARGV
local together = last - first < 2000
if together then
  for i = first, last do k = k + 1; set[k] = ARGV[i] end
end
if owner ~= '' then
  if ARGV[USER_AGENT] ~= '' then set[k + 1], set[k + 2], k = 'ua', ARGV[USER_AGENT], k + 2 end
  if ARGV[IP] ~= '' then set[k + 1], set[k + 2], k = 'ip', ARGV[IP], k + 2 end
end
redis.call('HSET', key, unpack(set))
drop_unwritten(key, m)
if not together then batched('HSET', key, ARGV, first, last) end
redis.call('PEXPIRE', key, format('%d', m.expiry - now))
return {m.expiry, remember, owner}
