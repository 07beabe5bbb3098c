-- On a Redis Cluster, where an owner's index and their sessions live in different slots, the
-- list reads the index itself and each session with this. KEYS[1] the session's hash (it
-- routes the call to its slot); ARGV[1] its id, [2] '1' to return its text too (a search).
-- Returns nil for a gone session, else what `summary_of` makes.
return summary_of(ARGV[1], ARGV[2] == '1')
