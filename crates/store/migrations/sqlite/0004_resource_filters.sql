-- The resource index also carries type and source, so that a type or source filter within a
-- resource is tested on the index entry and only matching events are read from the table (a type
-- filter that one event in twenty matches read twenty table rows for each row of its page).
DROP INDEX events_resource;
CREATE INDEX events_resource ON events (resource, seq, type, source) WHERE resource IS NOT NULL;
