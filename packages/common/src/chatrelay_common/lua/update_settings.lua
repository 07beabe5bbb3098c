-- ARGV[9] the settings JSON the caller merged its changes into, [10] the merged settings JSON,
-- [11] the `settings` event data. Sets them unless another update came in between (then the
-- caller merges again). Returns DONE, UNKNOWN_SESSION or SETTINGS_MOVED.
local stored = redis.call('HGET', session_key, FIELD_SETTINGS)
if not stored then return UNKNOWN_SESSION end
if stored ~= ARGV[9] then return SETTINGS_MOVED end
-- Nothing changed (as when a call that ran is retried): no event.
if ARGV[10] ~= stored then
  redis.call('HSET', session_key, FIELD_SETTINGS, ARGV[10])
  emit(SETTINGS_EVENT, ARGV[11])
end
touch_all()
return DONE
