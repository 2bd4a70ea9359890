-- Endpoint health, per subscription: the current streak of failed attempts (since the last
-- success), when it began, the last success and failure, and the last error's class. While an
-- endpoint fails it rests: no delivery of it is leased before rest_until (microseconds), so that
-- a dead endpoint with a long queue costs a few attempts per step of the ladder, not one per
-- queued delivery.
ALTER TABLE subscriptions ADD COLUMN consecutive_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE subscriptions ADD COLUMN failing_since BIGINT;
ALTER TABLE subscriptions ADD COLUMN last_success BIGINT;
ALTER TABLE subscriptions ADD COLUMN last_failure BIGINT;
ALTER TABLE subscriptions ADD COLUMN last_error TEXT;
ALTER TABLE subscriptions ADD COLUMN rest_until BIGINT;
