-- Extends the leases of any number of replies (of any sessions) in one call. KEYS: as
-- `for_each_session` says, per reply its session's and its own; ARGV[1] the KEYS per reply,
-- [2] unused, [9..] three per reply:
-- key prefix, session id, reply id. Returns per reply: LEASE_LOST when it no longer streams
-- or another holds its lease, else LEASE_KEPT, or STOP_ASKED when a client asked it to stop.
-- A lapsed lease is taken back: safe, since nobody else writes a streaming reply.
local function keep(reply)
  if redis.call('HGET', session_key, FIELD_STREAMING) ~= reply then return LEASE_LOST end
  local holder = redis.call('GET', base .. KEY_LOCK)
  if holder and holder ~= reply then return LEASE_LOST end
  redis.call('SET', base .. KEY_LOCK, reply, 'PX', lease_ms)
  index_lease(now_ms() + lease_ms)
  if redis.call('GET', base .. KEY_STOP) == reply then return STOP_ASKED end
  return LEASE_KEPT
end
return for_each_session(3, function(own)
  return keep(ARGV[own])
end)
