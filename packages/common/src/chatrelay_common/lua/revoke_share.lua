-- KEYS[1] session hash. Returns 0 for an unknown session, else 1 (its link, if it had one,
-- is gone and its viewers are told on the link's channel).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local token = redis.call('HGET', KEYS[1], FIELD_SHARE)
if token then
  redis.call('HDEL', KEYS[1], FIELD_SHARE)
  redis.call('DEL', SHARE_PREFIX .. token)
  redis.call('PUBLISH', SHARE_PREFIX .. token .. SHARE_REVOKED_SUFFIX, REVOKED_WIRE)
end
return 1
