-- Events in registration order. `seq` never goes backwards (AUTOINCREMENT), even after retention
-- has deleted the newest rows, so that a cursor can never be handed out twice.
CREATE TABLE events (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    id                  TEXT    NOT NULL,
    source              TEXT    NOT NULL,
    type                TEXT    NOT NULL,
    subject_key         TEXT,
    alternative_subject TEXT,
    resource            TEXT,
    registered          INTEGER NOT NULL, -- microseconds since the Unix epoch
    body                TEXT    NOT NULL  -- the event exactly as published
);

-- Deduplication by (source, id), and the `after=<id>` cursor lookup.
CREATE UNIQUE INDEX events_id_source ON events (id, source);
-- One index per query shape, each ending in seq so that a page is read in order from the index.
CREATE INDEX events_subject ON events (subject_key, seq) WHERE subject_key IS NOT NULL;
CREATE INDEX events_alternative_subject ON events (alternative_subject, seq) WHERE alternative_subject IS NOT NULL;
CREATE INDEX events_resource ON events (resource, seq) WHERE resource IS NOT NULL;

-- One row per group commit: every event of a commit shares its registration time, and times never
-- go backwards, so `from`/`to` become a range of seq found through this small table.
CREATE TABLE commits (
    first_seq  INTEGER PRIMARY KEY,
    last_seq   INTEGER NOT NULL,
    registered INTEGER NOT NULL
);
CREATE INDEX commits_registered ON commits (registered);
