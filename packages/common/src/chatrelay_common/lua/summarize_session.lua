-- On a Redis Cluster, where an owner's index and their sessions live in different slots, the
-- list reads the index itself and each session with this. KEYS the session's keys
-- (`SessionKeys.declared`; the first, its hash, routes the call to its slot); ARGV[1] its id,
-- [2] '1' to return its text too (a search).
-- Returns nil for a gone session, else what `summary_of` makes.
return summary_of(ARGV[1], ARGV[2] == '1')
