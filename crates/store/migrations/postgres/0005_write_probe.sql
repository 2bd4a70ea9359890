-- One row the writer rewrites to learn whether the store takes writes again after a full disk.
CREATE TABLE write_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at BIGINT NOT NULL
);
