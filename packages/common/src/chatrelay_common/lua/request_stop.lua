-- ARGV[9] stop-flag ms, [10] control channel. Flags the streaming reply to stop and tells every
-- gateway; a reply whose lease lapsed has no gateway to tell, so it is closed here. Returns
-- the reply id, or false when nothing streams.
local reply = redis.call('HGET', session_key, FIELD_STREAMING)
if not reply then return false end
if redis.call('EXISTS', base .. KEY_LOCK) == 0 then
  close_orphan(reply)
  return reply
end
redis.call('SET', base .. KEY_STOP, reply, 'PX', ARGV[9])
redis.call('PUBLISH', ARGV[10], sid .. ' ' .. reply)
touch_all()
return reply
