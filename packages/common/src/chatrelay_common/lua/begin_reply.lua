-- ARGV[9] mode (send|regenerate), [10] truncate-from id ('' none), [11] user message id,
-- [12] user content, [13] user `message` event data, [14] reply id, [15] creation time of
-- both messages (RFC 3339), [16] the title the message gives a session that has none ('' none),
-- [17] the reply's model and [18] its `start` data; when both are '', the reply uses the
-- session's model, which must be one of the pairs (model, its `start` data) from [19]
-- (checked before any write).
-- Returns {DONE, settings, then role and text of each message the upstream is sent (the
-- reply's own, and empty ones, left out)}, {MODEL_NOT_ALLOWED, the session's model}, or
-- {another code}: one round trip starts a reply.
local reply = ARGV[14]
local function started()
  local out = {DONE, redis.call('HGET', session_key, FIELD_SETTINGS)}
  for _, id in ipairs(redis.call('LRANGE', base .. KEY_ORDER, 0, -1)) do
    if id ~= reply then
      local text = redis.call('GET', base .. KEY_TEXT .. id)
      if text and text ~= '' then
        out[#out + 1] = redis.call('HGET', base .. KEY_MESSAGE .. id, FIELD_ROLE)
        out[#out + 1] = text
      end
    end
  end
  return out
end
-- The reply id is new for each call: finding it means a retry of a call that ran.
if redis.call('EXISTS', base .. KEY_MESSAGE .. reply) == 1 then return started() end
local settings = redis.call('HGET', session_key, FIELD_SETTINGS)
if not settings then return {UNKNOWN_SESSION} end
local model, start_data = ARGV[17], ARGV[18]
if model == '' then
  -- The operator may have narrowed the allowed models since this session chose its model.
  model = cjson.decode(settings)[SETTINGS_MODEL]
  start_data = nil
  for i = 19, #ARGV, 2 do
    if ARGV[i] == model then start_data = ARGV[i + 1] break end
  end
  if not start_data then return {MODEL_NOT_ALLOWED, model} end
end
local problem = not_idle()
if problem then return {problem} end
local mode, from = ARGV[9], ARGV[10]
local size = tonumber(redis.call('HGET', session_key, FIELD_BYTES) or '0')
if size + #ARGV[12] > tonumber(ARGV[7]) then return {SESSION_FULL} end
if mode == 'regenerate' then
  local last = redis.call('LINDEX', base .. KEY_ORDER, -1)
  if not last then return {NOTHING_TO_REGENERATE} end
  if redis.call('HGET', base .. KEY_MESSAGE .. last, FIELD_ROLE) == 'assistant' then
    truncate(last)
  end
elseif from ~= '' then
  if not truncate(from) then return {NOTHING_TO_REGENERATE} end
end
if mode == 'send' then
  add_message(ARGV[11], 'user', 'complete', ARGV[12], ARGV[15])
  if ARGV[16] ~= '' then redis.call('HSETNX', session_key, FIELD_TITLE, ARGV[16]) end
  emit(MESSAGE_EVENT, ARGV[13])
end
redis.call('SET', base .. KEY_LOCK, reply, 'PX', lease_ms)
index_lease(now_ms() + lease_ms)
redis.call('DEL', base .. KEY_STOP)
add_message(reply, 'assistant', 'streaming', '', ARGV[15])
redis.call('HSET', base .. KEY_MESSAGE .. reply, FIELD_MODEL, model)
redis.call('HSET', session_key, FIELD_STREAMING, reply, FIELD_BATCH, 0)
emit(START_EVENT, start_data)
touch_all()
return started()
