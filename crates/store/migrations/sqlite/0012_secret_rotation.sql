-- Changing a subscription's secret keeps the previous one signing beside it until
-- previous_secret_until (microseconds), so that receivers can switch without losing a message.
ALTER TABLE subscriptions ADD COLUMN previous_secret TEXT;
ALTER TABLE subscriptions ADD COLUMN previous_secret_until INTEGER;
