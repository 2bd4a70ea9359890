-- Due deliveries in lease order, (next_attempt, id): a lease reads the earliest few and stops. On
-- (next_attempt) alone every due delivery sharing a next_attempt (all those one dispatch enqueued)
-- had to be read and sorted for each lease: 30–57 ms with 22,000 due on PostgreSQL, against 2 ms.
DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries (next_attempt, id) WHERE state = 'pending';
