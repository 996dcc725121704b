-- Applies a Change. KEYS[1] = session key. ARGV: mode (`c`|`u`), now ms, idle ttl ms (0 = none),
-- deadline ms (or empty), remember (`0`|`1`|empty), cleared (`0`|`1`), owner (or empty), max bytes
-- (0 = none), n, then n fields to delete, then field/value pairs to set. Returns nil when an
-- update finds no live session, an error `TOOLARGE <bytes>` (changing nothing) when the values
-- would exceed the limit and grow, else {expiry ms, remember, owner}. Times are the app's clock;
-- the key's TTL is set relative to `now`, so a Redis clock ahead of or behind the app's never
-- shortens it.
local key = KEYS[1]
local now = tonumber(ARGV[2])
local idle = tonumber(ARGV[3])
local max = tonumber(ARGV[8])
local n = tonumber(ARGV[9])
local cleared = ARGV[6] == '1'
local m = {deadline = int(ARGV[4]), remember = 0, size = 0}
local old_size, owner = 0, ARGV[7]
local update = ARGV[1] == 'u'
-- Sizes of stored values are looked up only where there can be any.
local keep = update and not cleared
if update then
  local stored, fields = live(key, now, 'owner')
  if not stored then return fields or false end
  old_size = stored.size
  m.deadline = m.deadline or stored.deadline
  m.remember = stored.remember
  if owner == '' then owner = fields[3] or '' end
  if not cleared then m.size = stored.size end
end
if ARGV[5] ~= '' then m.remember = tonumber(ARGV[5]) end
-- Everything is checked and computed before the first write: a script is not rolled back.
if not m.deadline or m.deadline < 0 or m.deadline > MAX_TIME then
  return redis.error_reply('MALFORMED deadline')
end
m.expiry = m.deadline
if idle > 0 and now + idle < m.expiry then m.expiry = now + idle end
if keep then
  for i = 10, 9 + n do
    local old = redis.call('HSTRLEN', key, ARGV[i])
    if old > 0 then m.size = m.size - old - #ARGV[i] + 2 end
  end
end
for i = 10 + n, #ARGV, 2 do
  if keep then
    local old = redis.call('HSTRLEN', key, ARGV[i])
    if old > 0 then m.size = m.size - old - #ARGV[i] + 2 end
  end
  m.size = m.size + #ARGV[i] - 2 + #ARGV[i + 1]
end
if max > 0 and m.size > max and m.size > old_size then
  return redis.error_reply('TOOLARGE ' .. m.size)
end
if m.expiry <= now then
  redis.call('DEL', key)
  return {m.expiry, tostring(m.remember), owner}
end
if cleared then
  local gone = {}
  for _, field in ipairs(redis.call('HKEYS', key)) do
    if string.sub(field, 1, 2) == 'v:' then gone[#gone + 1] = field end
  end
  batched('HDEL', key, gone, 1, #gone)
end
batched('HDEL', key, ARGV, 10, 9 + n)
if ARGV[7] ~= '' then
  redis.call('HSET', key, 'meta', format_meta(m), 'owner', owner)
else
  redis.call('HSET', key, 'meta', format_meta(m))
end
batched('HSET', key, ARGV, 10 + n, #ARGV)
redis.call('PEXPIRE', key, m.expiry - now)
return {m.expiry, tostring(m.remember), owner}
