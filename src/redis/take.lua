-- Removes a field of the live session KEYS[1] and returns its value, or nil. The TTL is left as
-- it is; the size (`s`) follows. ARGV: now (Unix ms), field (`v:<key>`).
local key, now, field = KEYS[1], tonumber(ARGV[1]), ARGV[2]
local m, stored = live(key, now, field)
if not m then return stored or false end
local value = stored[1]
if not value then return false end
redis.call('HDEL', key, field)
m.size = math.max(0, m.size - (#field - 2) - #value)
write_meta(key, m)
return value
