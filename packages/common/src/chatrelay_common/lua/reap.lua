-- Closes the session's reply when its lease lapsed; keeps the index to running replies.
-- Returns the closed reply id, or false.
local reply = redis.call('HGET', session_key, FIELD_STREAMING)
if not reply then
  redis.call('ZREM', leases_key, sid)
  return false
end
local left = redis.call('PTTL', base .. KEY_LOCK)
if left > 0 then
  redis.call('ZADD', leases_key, now_ms() + left, sid)
  return false
end
close_orphan(reply)
return reply
