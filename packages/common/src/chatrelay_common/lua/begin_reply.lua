-- ARGV[9] mode (send|regenerate), [10] truncate-from id ('' none), [11] user message id,
-- [12] user content, [13] user `message` event data, [14] reply id, [15] `start` data,
-- [16] creation time of both messages (RFC 3339), [17] the reply's model, [18] the title the
-- message gives a session that has none ('' none).
-- The reply id is new for each call: finding it means a retry of a call that ran.
if redis.call('EXISTS', base .. KEY_MESSAGE .. ARGV[14]) == 1 then return DONE end
local problem = not_idle()
if problem then return problem end
local mode, from = ARGV[9], ARGV[10]
local size = tonumber(redis.call('HGET', session_key, FIELD_BYTES) or '0')
if size + #ARGV[12] > tonumber(ARGV[7]) then return SESSION_FULL end
if mode == 'regenerate' then
  local last = redis.call('LINDEX', base .. KEY_ORDER, -1)
  if not last then return NOTHING_TO_REGENERATE end
  if redis.call('HGET', base .. KEY_MESSAGE .. last, FIELD_ROLE) == 'assistant' then
    truncate(last)
  end
elseif from ~= '' then
  if not truncate(from) then return NOTHING_TO_REGENERATE end
end
if mode == 'send' then
  add_message(ARGV[11], 'user', 'complete', ARGV[12], ARGV[16])
  if ARGV[18] ~= '' then redis.call('HSETNX', session_key, FIELD_TITLE, ARGV[18]) end
  emit(MESSAGE_EVENT, ARGV[13])
end
redis.call('SET', base .. KEY_LOCK, ARGV[14], 'PX', lease_ms)
redis.call('ZADD', leases_key, now_ms() + lease_ms, sid)
redis.call('DEL', base .. KEY_STOP)
add_message(ARGV[14], 'assistant', 'streaming', '', ARGV[16])
redis.call('HSET', base .. KEY_MESSAGE .. ARGV[14], FIELD_MODEL, ARGV[17])
redis.call('HSET', session_key, FIELD_STREAMING, ARGV[14], FIELD_BATCH, 0)
emit(START_EVENT, ARGV[15])
touch_all()
return DONE
