-- KEYS[1] session hash; ARGV[1] key prefix of the session.
-- Returns {seq, settings, title, then per message: id, role, status, created, model, ending,
-- text, reasoning} or false for an unknown session. Fields it lacks come back false.
local seq = redis.call('HGET', KEYS[1], FIELD_SEQ)
if not seq then return false end
local out = {
  seq, redis.call('HGET', KEYS[1], FIELD_SETTINGS), redis.call('HGET', KEYS[1], FIELD_TITLE)
}
for _, id in ipairs(redis.call('LRANGE', ARGV[1] .. KEY_ORDER, 0, -1)) do
  local m = redis.call(
    'HMGET', ARGV[1] .. KEY_MESSAGE .. id,
    FIELD_ROLE, FIELD_STATUS, FIELD_CREATED, FIELD_MODEL, FIELD_ENDING
  )
  out[#out + 1] = id
  for i = 1, 5 do out[#out + 1] = m[i] end
  out[#out + 1] = redis.call('GET', ARGV[1] .. KEY_TEXT .. id) or ''
  out[#out + 1] = redis.call('GET', ARGV[1] .. KEY_REASONING .. id) or ''
end
return out
