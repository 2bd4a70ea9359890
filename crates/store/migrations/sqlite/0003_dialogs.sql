-- Dialogs of the Dialogporten-compatible dialog service, their seen log, and the outbox of events
-- that every change writes in its own transaction.
CREATE TABLE dialogs (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT, -- listing order and cursor
    id          TEXT    NOT NULL UNIQUE,
    resource    TEXT    NOT NULL, -- the service resource
    subject_key TEXT    NOT NULL, -- the party, as subject keys are written (see hendelse_model::subject)
    status      TEXT    NOT NULL,
    revision    TEXT    NOT NULL, -- new on every change (the ETag)
    change_id   TEXT    NOT NULL, -- new on every change that is not silent (what "seen" refers to)
    deleted     BOOLEAN NOT NULL DEFAULT FALSE,
    created     INTEGER NOT NULL, -- microseconds since the Unix epoch
    updated     INTEGER NOT NULL,
    document    TEXT    NOT NULL  -- the dialog as JSON
);
CREATE INDEX dialogs_subject ON dialogs (subject_key, seq);
CREATE INDEX dialogs_resource ON dialogs (resource, seq);

-- Who has seen which change of a dialog: once per user and change.
CREATE TABLE dialog_seen (
    id        TEXT    PRIMARY KEY, -- also the id of the seen event
    dialog_id TEXT    NOT NULL,
    change_id TEXT    NOT NULL,
    seen_by   TEXT    NOT NULL,
    seen_at   INTEGER NOT NULL
);
CREATE UNIQUE INDEX dialog_seen_once ON dialog_seen (dialog_id, change_id, seen_by);

-- Events not yet forwarded to the event log, in the order they were written.
CREATE TABLE dialog_outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT    NOT NULL,
    event_type  TEXT    NOT NULL,
    dialog_id   TEXT    NOT NULL,
    resource    TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    source_path TEXT    NOT NULL, -- appended to the configured source base
    time        INTEGER NOT NULL, -- the change's transaction time, microseconds
    data        TEXT              -- JSON object, or NULL for none
);
