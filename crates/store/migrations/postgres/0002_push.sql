-- Webhook subscriptions and their durable delivery queue.
CREATE TABLE subscriptions (
    id                         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    end_point                  TEXT    NOT NULL,
    resource_filter            TEXT    NOT NULL,
    source_filter              TEXT,
    subject_filter             TEXT,
    alternative_subject_filter TEXT,
    type_filter                TEXT,
    include_subunits           BOOLEAN NOT NULL DEFAULT FALSE,
    consumer                   TEXT    NOT NULL,
    created_by                 TEXT    NOT NULL,
    principal                  TEXT    NOT NULL, -- JSON: whom deliveries are authorized as
    secret                     TEXT,
    created                    BIGINT  NOT NULL, -- microseconds since the Unix epoch
    start_seq                  BIGINT  NOT NULL, -- events after this position are delivered
    validated                  BOOLEAN NOT NULL DEFAULT FALSE,
    enabled                    BOOLEAN NOT NULL DEFAULT TRUE,
    disabled_reason            TEXT,
    deleted                    BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX subscriptions_consumer ON subscriptions (consumer, id) WHERE NOT deleted;

CREATE TABLE deliveries (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id BIGINT  NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    event_seq       BIGINT,          -- NULL for the validation handshake
    event_id        TEXT    NOT NULL,
    webhook_id      TEXT    NOT NULL, -- the same on every attempt
    body            TEXT    NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'pending', -- pending | delivered | dead
    attempts        BIGINT  NOT NULL DEFAULT 0,
    next_attempt    BIGINT  NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT,
    last_status     BIGINT,
    last_error      TEXT,
    created         BIGINT  NOT NULL
);
CREATE UNIQUE INDEX deliveries_event ON deliveries (subscription_id, event_seq);
CREATE INDEX deliveries_due ON deliveries (next_attempt) WHERE state = 'pending';
CREATE INDEX deliveries_of_subscription ON deliveries (subscription_id, state, id);

-- Every attempt, for the deliveries endpoint.
CREATE TABLE delivery_attempts (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id BIGINT  NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    at          BIGINT  NOT NULL,
    status      BIGINT,
    error       TEXT
);
CREATE INDEX delivery_attempts_of_delivery ON delivery_attempts (delivery_id, id);

-- How far the dispatcher has matched the log against the subscriptions.
CREATE TABLE dispatch_position (
    singleton BOOLEAN PRIMARY KEY CHECK (singleton),
    seq       BIGINT  NOT NULL
);
INSERT INTO dispatch_position (singleton, seq)
    SELECT TRUE, seq FROM event_tip;
