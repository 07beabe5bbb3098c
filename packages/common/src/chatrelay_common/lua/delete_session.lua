-- ARGV[9] the gateways' control channel, [10] the `deleted` event data. Tells the gateway of
-- a streaming reply to stop it (its writes then find nothing and end), tells every tab
-- (`deleted`), then removes every key of the session and its entries in the lease and owner
-- indexes, and its share link, at once. Returns {UNKNOWN_SESSION} (deleted already), or
-- {DONE, owner, share token} ('' for none): on a Redis Cluster the owner's index and the link
-- live in other slots, and the store removes those two itself.
if redis.call('EXISTS', session_key) == 0 then return {UNKNOWN_SESSION} end
local reply = redis.call('HGET', session_key, FIELD_STREAMING)
if reply then redis.call('PUBLISH', ARGV[9], sid .. ' ' .. reply) end
emit(DELETED_EVENT, ARGV[10])
local owner = redis.call('HGET', session_key, FIELD_OWNER) or ''
local share = redis.call('HGET', session_key, FIELD_SHARE) or ''
if CLUSTER == 0 and owner ~= '' then redis.call('ZREM', OWNER_INDEX_PREFIX .. owner, sid) end
unlist_lease()
local doomed = {session_key, log_key, base .. KEY_ORDER, base .. KEY_LOCK, base .. KEY_STOP}
for _, id in ipairs(redis.call('LRANGE', base .. KEY_ORDER, 0, -1)) do
  doomed[#doomed + 1] = base .. KEY_MESSAGE .. id
  doomed[#doomed + 1] = base .. KEY_TEXT .. id
  doomed[#doomed + 1] = base .. KEY_REASONING .. id
end
-- Its share link: the token then leads nowhere (its viewers got `deleted` like every tab).
if CLUSTER == 0 and share ~= '' then doomed[#doomed + 1] = SHARE_PREFIX .. share end
-- In slices: unpack() of thousands of values would overflow Lua's stack.
for first = 1, #doomed, 500 do
  redis.call('DEL', unpack(doomed, first, math.min(first + 499, #doomed)))
end
return {DONE, owner, share}
