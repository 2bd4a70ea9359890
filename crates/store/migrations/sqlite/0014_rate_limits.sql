-- An optional rate limit per subscription (deliveries per second), kept across nodes by a
-- generic cell rate algorithm: rate_tat (microseconds) is the theoretical time of the next
-- permit, which every node's worker moves forward in the store before it sends.
ALTER TABLE subscriptions ADD COLUMN rate_limit INTEGER;
ALTER TABLE subscriptions ADD COLUMN rate_tat INTEGER;
