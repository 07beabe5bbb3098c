local problem = not_idle()
if problem then return problem end
if redis.call('LLEN', base .. KEY_ORDER) > 0 then truncate('') end
touch_all()
return DONE
