-- Removes field ARGV[2] of the live session KEYS[1] (ARGV[1] = now ms) and returns its value, or
-- nil. The TTL is left as it is; `meta`'s size follows.
local key, field = KEYS[1], ARGV[2]
local m, stored = live(key, tonumber(ARGV[1]), field)
if not m then return stored or false end
local value = stored[3]
if not value then return false end
redis.call('HDEL', key, field)
m.size = math.max(0, m.size - (#field - 2) - #value)
redis.call('HSET', key, 'meta', format_meta(m))
return value
