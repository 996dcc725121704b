-- Records session ARGV[2] with expiry ARGV[3] (ms) in the owner index KEYS[1], dropping members
-- expired at ARGV[1] (now, ms); the index expires with its last member. A member whose session
-- has since changed owner stays until its score passes: deletes check the session's own owner.
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
if tonumber(ARGV[3]) > now then
  redis.call('ZADD', KEYS[1], 'GT', ARGV[3], ARGV[2])
else
  redis.call('ZREM', KEYS[1], ARGV[2])
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIRE', KEYS[1], math.max(1, tonumber(last[2]) - now)) end
return 1
