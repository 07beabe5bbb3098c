-- ARGV[9] reply id, [10] final status, [11] event name, [12] event data, [13] the reply's
-- ending (JSON, kept for snapshots).
-- Returns the event's seq, or NOT_STREAMING when the reply was closed already.
local reply = ARGV[9]
if redis.call('HGET', session_key, FIELD_STREAMING) ~= reply then return NOT_STREAMING end
redis.call('HSET', base .. KEY_MESSAGE .. reply, FIELD_STATUS, ARGV[10], FIELD_ENDING, ARGV[13])
redis.call('HDEL', session_key, FIELD_STREAMING)
if redis.call('GET', base .. KEY_LOCK) == reply then redis.call('DEL', base .. KEY_LOCK) end
redis.call('DEL', base .. KEY_STOP)
unlist_lease()
local seq = emit(ARGV[11], ARGV[12])
touch_all()
return seq
