-- KEYS[1] session hash, KEYS[2] the new token's key; ARGV[1] the new token, [2] session id.
-- Returns false for an unknown session, else {token, 1 when this call made it, 0 when the
-- session already had a live one (returned again, its key's TTL renewed)}.
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then return false end
local function live_as_long_as_the_session(key)
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) else redis.call('PERSIST', key) end
end
local current = redis.call('HGET', KEYS[1], FIELD_SHARE)
if current and redis.call('EXISTS', SHARE_PREFIX .. current) == 1 then
  live_as_long_as_the_session(SHARE_PREFIX .. current)
  return {current, 0}
end
redis.call('SET', KEYS[2], ARGV[2])
live_as_long_as_the_session(KEYS[2])
redis.call('HSET', KEYS[1], FIELD_SHARE, ARGV[1])
return {ARGV[1], 1}
