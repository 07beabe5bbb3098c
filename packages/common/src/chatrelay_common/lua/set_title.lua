-- ARGV[9] the new title, [10] its `title` event data. Returns DONE or UNKNOWN_SESSION. The
-- same title again (as when a call that ran is retried) emits nothing.
if redis.call('EXISTS', session_key) == 0 then return UNKNOWN_SESSION end
if redis.call('HGET', session_key, FIELD_TITLE) ~= ARGV[9] then
  redis.call('HSET', session_key, FIELD_TITLE, ARGV[9])
  emit(TITLE_EVENT, ARGV[10])
end
touch_all()
return DONE
