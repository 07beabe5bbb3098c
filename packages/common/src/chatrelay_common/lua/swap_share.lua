-- On a Redis Cluster, where a session and its share link live in different slots, the store
-- makes and revokes a link in steps; this is the session's one. KEYS[1] the session hash;
-- ARGV[1] the token it must name now ('' none), [2] the token it is to name ('' none).
-- Returns false for an unknown session, else {the token it names now ('' none), 1 when this
-- call changed it, 0 when it did not name ARGV[1] (another call changed it meanwhile)}.
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local current = redis.call('HGET', KEYS[1], FIELD_SHARE) or ''
if current ~= ARGV[1] then return {current, 0} end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], FIELD_SHARE)
else
  redis.call('HSET', KEYS[1], FIELD_SHARE, ARGV[2])
end
return {ARGV[2], 1}
