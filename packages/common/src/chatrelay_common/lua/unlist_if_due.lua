-- On a Redis Cluster, where the store keeps the lease index itself: KEYS[1] the lease index;
-- ARGV pairs (session id, the deadline the reaper read). Removes each entry still at that
-- deadline: one a new reply of the session moved later since is kept.
for i = 1, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return 0
