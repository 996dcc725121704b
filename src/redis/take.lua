-- Removes a field of the live session KEYS[1] and returns its value, or nil. The TTL is left as
-- it is; the size (`s`) follows. ARGV: now (Unix ms), field (`v:<key>`).
local key, now, field = KEYS[1], tonumber(ARGV[1]), ARGV[2]
local m, value = live(key, now, field)
if not m then return value or false end
if not value then return false end
redis.call('HDEL', key, field)
m.size = math.max(0, m.size - (#field - 2) - #value)
redis.call('HSET', key, unpack((meta_pairs(m))))
drop_unwritten(key, m)
return value
