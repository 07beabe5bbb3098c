-- Shared by every write script, after the constants the store composes in (key suffixes,
-- return codes, event names and JSON templates: see `_store.py`).
-- KEYS[1] session hash, KEYS[2] log, then the session's other keys the store knows of
-- (`SessionKeys.declared`), last the lease index (not on a Redis Cluster, where it lives in
-- another slot and the store keeps it itself); ARGV[1] key prefix of the
-- session, [2] session id, [3] log cap in events, [4] log cap in bytes, [5] session TTL in
-- seconds, [6] lease ms, [7] session size cap in bytes, [8] '1' when Redis has every write on
-- disk before it answers (appendfsync always). A script's own arguments start at ARGV[9].
local session_key, log_key, leases_key = KEYS[1], KEYS[2], nil
if CLUSTER == 0 then leases_key = KEYS[#KEYS] end
local base, sid, ttl, lease_ms = ARGV[1], ARGV[2], ARGV[5], tonumber(ARGV[6])
-- A script touches one slot only on a Redis Cluster (CLUSTER == 1): there the lease index, an
-- owner's index and a share link (other slots) are the store's to keep, outside the script.
local function index_lease(deadline)
  if CLUSTER == 0 then redis.call('ZADD', leases_key, deadline, sid) end
end
local function unlist_lease()
  if CLUSTER == 0 then redis.call('ZREM', leases_key, sid) end
end
-- This Redis's run id, read once per script call (INFO is costly to build).
local run_id = nil
-- On a cluster: INFO replication, likewise read once per call.
local replication = nil
-- Read once per script call: a call that writes many replies needs it for each.
local now = nil
local function now_ms()
  if not now then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return now
end
-- Drops the oldest entries while the log is over either cap (always keeping the newest, so a
-- resuming tab can tell where the session is).
local function trim_log(size)
  local max_events, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
  local count = redis.call('XLEN', log_key)
  if count <= max_events and size <= max_bytes then return end
  local cursor = '-'
  while count > 1 and (count > max_events or size > max_bytes) do
    local entries = redis.call('XRANGE', log_key, cursor, '+', 'COUNT', 64)
    for _, entry in ipairs(entries) do
      if count <= 1 or (count <= max_events and size <= max_bytes) then break end
      size = size - #entry[2][4]
      count = count - 1
    end
    cursor = '(' .. entries[#entries][1]
  end
  redis.call('XTRIM', log_key, 'MAXLEN', count)
  redis.call('HSET', session_key, FIELD_LOG_BYTES, size)
end
-- A restart of a Redis that may lose its last writes (fsync every second, or snapshots only)
-- may have lost events that tabs hold: new ids must not reuse theirs. So a session's first
-- event after a restart skips far ahead, and a tab resuming from any older id gets a reset
-- and a snapshot instead of events that are not the ones it missed.
-- On a Redis Cluster the loss to guard against is a failover: replication is asynchronous, so
-- a promoted replica may lack its primary's last writes. A session records the replication id
-- of the primary that wrote it; a promoted replica keeps its old primary's as `master_replid2`.
-- A session written under that id skips; one that came from another shard by slot migration
-- (which loses nothing) just takes the new id.
local function skip_ids_after_a_lossy_restart()
  if CLUSTER == 1 then
    replication = replication or redis.call('INFO', 'replication')
    local current = string.match(replication, 'master_replid:(%x+)')
    local stored = redis.call('HGET', session_key, FIELD_RUN)
    if stored == current then return end
    if stored and stored == string.match(replication, 'master_replid2:(%x+)') then
      redis.call('HINCRBY', session_key, FIELD_SEQ, SEQ_SKIP_AFTER_RESTART)
    end
    redis.call('HSET', session_key, FIELD_RUN, current)
    return
  end
  if ARGV[8] == '1' then return end
  run_id = run_id or string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
  if redis.call('HGET', session_key, FIELD_RUN) == run_id then return end
  if tonumber(redis.call('HGET', session_key, FIELD_SEQ) or '0') > 0 then
    redis.call('HINCRBY', session_key, FIELD_SEQ, SEQ_SKIP_AFTER_RESTART)
  end
  redis.call('HSET', session_key, FIELD_RUN, run_id)
end
-- Logs and publishes one event. The pub/sub message is "<seq> <name> <json>": this is its
-- only writer; `decode_wire` in `_events.py` its reader. On a Redis Cluster it goes to the
-- session's sharded channel (SPUBLISH), which only its shard carries: a plain PUBLISH would be
-- broadcast to every node.
local function emit(name, data)
  skip_ids_after_a_lossy_restart()
  local seq = redis.call('HINCRBY', session_key, FIELD_SEQ, 1)
  redis.call('XADD', log_key, seq .. '-0', LOG_NAME, name, LOG_DATA, data)
  trim_log(redis.call('HINCRBY', session_key, FIELD_LOG_BYTES, #data))
  local wire = seq .. WIRE_SEPARATOR .. name .. WIRE_SEPARATOR .. data
  redis.call(PUBLISH_COMMAND, base .. KEY_CHANNEL, wire)
  return seq
end
-- Activity: every key of the session lives another TTL (lock and stop have their own).
local function touch_all()
  redis.call('EXPIRE', session_key, ttl)
  redis.call('EXPIRE', log_key, ttl)
  redis.call('EXPIRE', base .. KEY_ORDER, ttl)
  for _, id in ipairs(redis.call('LRANGE', base .. KEY_ORDER, 0, -1)) do
    redis.call('EXPIRE', base .. KEY_MESSAGE .. id, ttl)
    redis.call('EXPIRE', base .. KEY_TEXT .. id, ttl)
    redis.call('EXPIRE', base .. KEY_REASONING .. id, ttl)
  end
  if CLUSTER == 1 then return end  -- the store refreshes these two (other slots) itself
  -- The session moves to the top of its creator's list, which lives as long as it does.
  local owner = redis.call('HGET', session_key, FIELD_OWNER)
  if owner then
    redis.call('ZADD', OWNER_INDEX_PREFIX .. owner, now_ms(), sid)
    redis.call('EXPIRE', OWNER_INDEX_PREFIX .. owner, ttl)
  end
  -- Its share link lives as long as it does too.
  local share = redis.call('HGET', session_key, FIELD_SHARE)
  if share then redis.call('EXPIRE', SHARE_PREFIX .. share, ttl) end
end
-- The cheap form for a delta: only the keys it writes (the others were touched at its start),
-- and only once the TTL has run down (a second at most): at the pace of tokens, five EXPIREs
-- per delta would be a good part of its cost.
local function touch_reply(id)
  if redis.call('TTL', session_key) >= tonumber(ttl) then return end
  redis.call('EXPIRE', session_key, ttl)
  redis.call('EXPIRE', log_key, ttl)
  redis.call('EXPIRE', base .. KEY_ORDER, ttl)
  redis.call('EXPIRE', base .. KEY_MESSAGE .. id, ttl)
  redis.call('EXPIRE', base .. KEY_TEXT .. id, ttl)
  redis.call('EXPIRE', base .. KEY_REASONING .. id, ttl)
end
local function add_message(id, role, status, content, created)
  redis.call('RPUSH', base .. KEY_ORDER, id)
  redis.call(
    'HSET', base .. KEY_MESSAGE .. id, FIELD_ROLE, role, FIELD_STATUS, status, FIELD_CREATED, created
  )
  redis.call('SET', base .. KEY_TEXT .. id, content)
  redis.call('HINCRBY', session_key, FIELD_BYTES, #content)
end
-- Removes message `from` and everything after it; false when `from` is not in the session.
local function truncate(from)
  local ids = redis.call('LRANGE', base .. KEY_ORDER, 0, -1)
  local at = nil
  for i, id in ipairs(ids) do
    if from == '' or id == from then at = i break end
  end
  if at == nil then return from == '' end
  local freed = 0
  for i = at, #ids do
    local text, reasoning = base .. KEY_TEXT .. ids[i], base .. KEY_REASONING .. ids[i]
    freed = freed + redis.call('STRLEN', text) + redis.call('STRLEN', reasoning)
    redis.call('DEL', base .. KEY_MESSAGE .. ids[i], text, reasoning)
  end
  if freed > 0 then redis.call('HINCRBY', session_key, FIELD_BYTES, -freed) end
  if at == 1 then
    redis.call('DEL', base .. KEY_ORDER)
  else
    redis.call('LTRIM', base .. KEY_ORDER, 0, at - 2)
  end
  -- The id (maybe found here, in Redis) goes into a template that msgspec encoded; ids are
  -- URL-safe, so they need no JSON escaping.
  local data = TRUNCATE_ALL_DATA
  if from ~= '' then data = TRUNCATE_FROM_DATA[1] .. from .. TRUNCATE_FROM_DATA[2] end
  emit(TRUNCATE_EVENT, data)
  return true
end
-- Ends a reply whose gateway stopped refreshing its lease; its partial text is kept.
local function close_orphan(reply)
  redis.call(
    'HSET', base .. KEY_MESSAGE .. reply, FIELD_STATUS, 'error', FIELD_ENDING, INTERRUPTED_ENDING
  )
  redis.call('HDEL', session_key, FIELD_STREAMING)
  redis.call('DEL', base .. KEY_STOP)
  unlist_lease()
  emit(ERROR_EVENT, INTERRUPTED_DATA[1] .. reply .. INTERRUPTED_DATA[2])
  touch_all()
end
-- For writes that need the session idle: an error code, or nil when idle. A reply whose lease
-- lapsed keeps status `streaming` until someone closes it: close it here.
local function not_idle()
  if redis.call('EXISTS', session_key) == 0 then return UNKNOWN_SESSION end
  if redis.call('EXISTS', base .. KEY_LOCK) == 1 then return BUSY end
  local orphan = redis.call('HGET', session_key, FIELD_STREAMING)
  if orphan then close_orphan(orphan) end
  return nil
end

-- For the scripts that serve many sessions in one call. KEYS: `SessionKeys.declared` of each
-- item (its session hash and log first; ARGV[1] says how many per item), then the lease index
-- (not on a cluster, where the items are of one slot); ARGV from [9]: `stride` values per
-- item, its key prefix and session id first. Points the shared locals at each item's session
-- in turn and returns {fn(index of the item's own first argument), ...}.
local function for_each_session(stride, fn)
  local per_item = tonumber(ARGV[1])
  local results = {}
  for i = 1, (#KEYS - (1 - CLUSTER)) / per_item do
    local at = 9 + (i - 1) * stride
    local first = (i - 1) * per_item + 1
    session_key, log_key = KEYS[first], KEYS[first + 1]
    base, sid = ARGV[at], ARGV[at + 1]
    results[i] = fn(at + 2)
  end
  return results
end
