-- Extends the leases of any number of replies (of any sessions) in one call. KEYS: (session
-- hash, log) per reply, then the lease index; ARGV[1] and [2] unused, [9..] three per reply:
-- key prefix, session id, reply id. Returns per reply: LEASE_LOST when it no longer streams
-- or another holds its lease, else LEASE_KEPT, or STOP_ASKED when a client asked it to stop.
-- A lapsed lease is taken back: safe, since nobody else writes a streaming reply.
local function keep(reply)
  if redis.call('HGET', session_key, FIELD_STREAMING) ~= reply then return LEASE_LOST end
  local holder = redis.call('GET', base .. KEY_LOCK)
  if holder and holder ~= reply then return LEASE_LOST end
  redis.call('SET', base .. KEY_LOCK, reply, 'PX', lease_ms)
  redis.call('ZADD', leases_key, now_ms() + lease_ms, sid)
  if redis.call('GET', base .. KEY_STOP) == reply then return STOP_ASKED end
  return LEASE_KEPT
end
leases_key = KEYS[#KEYS]
local results = {}
for i = 1, (#KEYS - 1) / 2 do
  local at = 9 + (i - 1) * 3
  session_key, log_key = KEYS[2 * i - 1], KEYS[2 * i]
  base, sid = ARGV[at], ARGV[at + 1]
  results[i] = keep(ARGV[at + 2])
end
return results
