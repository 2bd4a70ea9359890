-- Delivered deliveries and dead letters are pruned after their retention, oldest first, by the
-- time they were settled (next_attempt holds it once a delivery is no longer pending).
CREATE INDEX deliveries_delivered ON deliveries (next_attempt) WHERE state = 'delivered';
CREATE INDEX deliveries_dead ON deliveries (next_attempt) WHERE state = 'dead';
