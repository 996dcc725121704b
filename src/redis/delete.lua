-- Deletes KEYS[1], unless an owner is given and is not its owner. Returns {status, moved, owner}:
-- status 1 when a session record was deleted, 0 when a replacement marker or nothing was, -1
-- when it belongs to another owner (kept); `moved` is a marker's successor. ARGV: the owner it
-- must have, or empty for any.
local key, only_owner = KEYS[1], ARGV[1]
local kind = redis.call('TYPE', key).ok
if kind ~= 'hash' then
  if kind ~= 'none' and only_owner == '' then redis.call('DEL', key) end
  return {0, false, false}
end
local stored = redis.call('HMGET', key, 'owner', 'moved', 'd', 'meta')
if only_owner ~= '' and stored[1] ~= only_owner then return {-1, false, false} end
redis.call('DEL', key)
local status = 0
if (stored[3] or stored[4]) and not stored[2] then status = 1 end
return {status, stored[2] or false, stored[1] or false}
