-- Batched delivery, opted into per subscription: up to max_events_per_batch events in one POST,
-- a partial batch waiting up to max_wait_ms for more.
ALTER TABLE subscriptions ADD COLUMN max_events_per_batch BIGINT NOT NULL DEFAULT 1;
ALTER TABLE subscriptions ADD COLUMN max_wait_ms BIGINT NOT NULL DEFAULT 0;
-- A batch is one delivery: event_seq is its first event, batch_seqs all of them in log order
-- (comma-separated); NULL for a delivery of one event or the handshake.
ALTER TABLE deliveries ADD COLUMN batch_seqs TEXT;
ALTER TABLE deliveries ADD COLUMN event_count BIGINT NOT NULL DEFAULT 1;
