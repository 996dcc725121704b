-- Replaces the live session KEYS[1] by its successor ARGV[2] (ARGV[1] = now ms, ARGV[3] = grace
-- ms): the hash becomes {moved = successor, owner = its owner}, kept for the grace period (or
-- until the session would have expired), so that a destroy racing the renew follows it. Returns
-- {1, owner or false}, or 0 when there was no live session (nothing changed).
local key, now = KEYS[1], tonumber(ARGV[1])
local m, stored = live(key, now, 'owner')
if not m then return stored or 0 end
redis.call('DEL', key)
if stored[3] then
  redis.call('HSET', key, 'moved', ARGV[2], 'owner', stored[3])
else
  redis.call('HSET', key, 'moved', ARGV[2])
end
redis.call('PEXPIRE', key, math.min(tonumber(ARGV[3]), m.expiry - now))
return {1, stored[3] or false}
