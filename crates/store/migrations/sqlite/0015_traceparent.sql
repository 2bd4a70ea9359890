-- The W3C traceparent a publish request carried (its header), kept with each of its events and
-- sent with their deliveries, so that a trace spans producer, Hendelse and subscriber. NULL when
-- the request had none (an event's own traceparent attribute travels in its body).
ALTER TABLE events ADD COLUMN traceparent TEXT;
