-- Events in registration order. `seq` is assigned by the writer while it holds the lock on
-- `event_tip`, which it keeps until its transaction commits: so numbers become visible in commit
-- order on every node, and a reader paging with `after` never skips a later-committing event.
CREATE TABLE events (
    seq                 BIGINT PRIMARY KEY,
    id                  TEXT   NOT NULL,
    source              TEXT   NOT NULL,
    type                TEXT   NOT NULL,
    subject_key         TEXT,
    alternative_subject TEXT,
    resource            TEXT,
    registered          BIGINT NOT NULL, -- microseconds since the Unix epoch
    body                TEXT   NOT NULL  -- the event exactly as published
);

CREATE UNIQUE INDEX events_id_source ON events (id, source);
CREATE INDEX events_subject ON events (subject_key, seq) WHERE subject_key IS NOT NULL;
CREATE INDEX events_alternative_subject ON events (alternative_subject, seq) WHERE alternative_subject IS NOT NULL;
CREATE INDEX events_resource ON events (resource, seq) WHERE resource IS NOT NULL;

-- One row per group commit; see the SQLite schema.
CREATE TABLE commits (
    first_seq  BIGINT PRIMARY KEY,
    last_seq   BIGINT NOT NULL,
    registered BIGINT NOT NULL
);
CREATE INDEX commits_registered ON commits (registered);

-- The last assigned seq and registration time: one row, locked by each writer until it commits.
CREATE TABLE event_tip (
    singleton  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    seq        BIGINT NOT NULL,
    registered BIGINT NOT NULL
);
INSERT INTO event_tip (singleton, seq, registered) VALUES (TRUE, 0, 0);
