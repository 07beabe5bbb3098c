-- Text and reasoning for the streaming replies of any number of sessions, in one call: a
-- gateway's writer sends every reply's pending text together (one round trip, not one per
-- reply per token). KEYS: as `for_each_session` says, per write its session's and reply's;
-- ARGV[1] the KEYS per write, [2] unused, [9..] seven per write: key prefix, session id,
-- reply id, kind (REASONING_EVENT or DELTA_EVENT), text, its event data, batch number (1, 2,
-- … per reply, across both kinds; '' for an unnumbered write). Writes to one reply go in batch order.
-- Returns per write: its seq, or APPLIED_ALREADY (a retried call that had run), or
-- NOT_STREAMING (the reply finished, or was closed as an orphan).
local function append(reply, kind, text, data, batch)
  local state = redis.call('HMGET', session_key, FIELD_STREAMING, FIELD_BATCH)
  if state[1] ~= reply then return NOT_STREAMING end
  if batch ~= '' then
    if tonumber(batch) <= tonumber(state[2] or '0') then return APPLIED_ALREADY end
    redis.call('HSET', session_key, FIELD_BATCH, batch)
  end
  local kept = KEY_TEXT
  if kind == REASONING_EVENT then kept = KEY_REASONING else kind = DELTA_EVENT end
  redis.call('APPEND', base .. kept .. reply, text)
  redis.call('HINCRBY', session_key, FIELD_BYTES, #text)
  -- The lease is extended as the keepalive does, once a third of it has passed.
  local lock = base .. KEY_LOCK
  if redis.call('GET', lock) == reply and redis.call('PTTL', lock) < lease_ms * 2 / 3 then
    redis.call('PEXPIRE', lock, lease_ms)
    index_lease(now_ms() + lease_ms)
  end
  touch_reply(reply)
  return emit(kind, data)
end
return for_each_session(7, function(own)
  return append(ARGV[own], ARGV[own + 1], ARGV[own + 2], ARGV[own + 3], ARGV[own + 4])
end)
