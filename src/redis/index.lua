-- Records a session in the owner index KEYS[1], dropping members expired by now; the index
-- expires with its last member. A member whose session has since changed owner stays until its
-- score passes: deletes check the session's own owner. ARGV: now (Unix ms), the session id, its
-- expiry (Unix ms). Times go to Redis as the strings they came as, never as Lua numbers.
local index, now_ms, id, expiry_ms = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local now = tonumber(now_ms)
redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. now_ms)
if tonumber(expiry_ms) > now then
  redis.call('ZADD', index, 'GT', expiry_ms, id)
else
  redis.call('ZREM', index, id)
end
local last = redis.call('ZRANGE', index, -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIRE', index, math.max(1, tonumber(last[2]) - now)) end
return 1
