-- Bumped in the transaction of every change to which subscriptions are live (created, deleted,
-- disabled, enabled again), so that a dispatcher on any node knows when to rebuild its index of
-- them instead of reading them all for every page of events.
CREATE TABLE subscription_generation (
    singleton  BOOLEAN PRIMARY KEY CHECK (singleton),
    generation BIGINT  NOT NULL
);
INSERT INTO subscription_generation (singleton, generation) VALUES (TRUE, 0);
