-- A delivery of an event keeps no copy of it: the lease reads the body from events by event_seq
-- (an empty body marks this; the handshake, which is no stored event, keeps its message).
UPDATE deliveries SET body = ''
    WHERE event_seq IS NOT NULL
      AND EXISTS (SELECT 1 FROM events e WHERE e.seq = deliveries.event_seq);
-- Retention deletes the deliveries of the events it deletes.
CREATE INDEX deliveries_of_event ON deliveries (event_seq);
