-- Replays: a subscription's owner asks for a window of stored events again. Each request is one
-- row (its key makes a repeat of the request a no-op); its deliveries name it in replay_id, 0 for
-- the live deliveries, so that an event can be queued once live and once per replay.
CREATE TABLE replays (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id BIGINT NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    request_key     TEXT   NOT NULL,
    request         TEXT   NOT NULL, -- the window as asked for (JSON), to refuse a key reused for another
    queued          BIGINT NOT NULL,
    created         BIGINT NOT NULL
);
CREATE UNIQUE INDEX replays_key ON replays (subscription_id, request_key);
ALTER TABLE deliveries ADD COLUMN replay_id BIGINT NOT NULL DEFAULT 0;
DROP INDEX deliveries_event;
CREATE UNIQUE INDEX deliveries_event ON deliveries (subscription_id, event_seq, replay_id);
