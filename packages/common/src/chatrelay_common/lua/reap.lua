-- Closes the session's reply when its lease lapsed; keeps the index to running replies.
-- Returns {the closed reply id or '', the ms its lease has left (0: no reply streams now)}.
local reply = redis.call('HGET', session_key, FIELD_STREAMING)
if not reply then
  unlist_lease()
  return {'', 0}
end
local left = redis.call('PTTL', base .. KEY_LOCK)
if left > 0 then
  index_lease(now_ms() + left)
  return {'', left}
end
close_orphan(reply)
return {reply, 0}
