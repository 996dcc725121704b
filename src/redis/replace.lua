-- Replaces the live session KEYS[1] by its successor: the hash becomes {moved = successor,
-- owner = its owner}, kept for the grace period (or until the session would have expired), so
-- that a destroy racing the renew follows it. Returns {1, owner or false}, or 0 when there was
-- no live session (nothing changed). ARGV: now (Unix ms), the successor's id, grace (ms).
local key, now, successor, grace = KEYS[1], tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local m, owner = live(key, now, 'owner')
if not m then return owner or 0 end
redis.call('DEL', key)
if owner then
  redis.call('HSET', key, 'moved', successor, 'owner', owner)
else
  redis.call('HSET', key, 'moved', successor)
end
redis.call('PEXPIRE', key, math.min(grace, m.expiry - now))
return {1, owner or false}
