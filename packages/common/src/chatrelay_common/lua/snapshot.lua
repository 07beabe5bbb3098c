-- KEYS[1] session hash; ARGV[1] key prefix of the session.
-- Returns {seq, settings, id1, role1, status1, text1, ...} or false for an unknown session.
local seq = redis.call('HGET', KEYS[1], FIELD_SEQ)
if not seq then return false end
local out = {seq, redis.call('HGET', KEYS[1], FIELD_SETTINGS)}
for _, id in ipairs(redis.call('LRANGE', ARGV[1] .. KEY_ORDER, 0, -1)) do
  local m = redis.call('HMGET', ARGV[1] .. KEY_MESSAGE .. id, FIELD_ROLE, FIELD_STATUS)
  out[#out + 1] = id
  out[#out + 1] = m[1]
  out[#out + 1] = m[2]
  out[#out + 1] = redis.call('GET', ARGV[1] .. KEY_TEXT .. id) or ''
end
return out
