//! The delivery history that does not grow forever: delivered deliveries and dead letters, with
//! their attempts, are deleted once they were settled longer ago than their retention, a bounded
//! batch per transaction (oldest first, from their own partial indexes) so that pruning never
//! holds the writer for long.

/// Implements history pruning for `$store` as inherent methods that the push store's trait
/// implementation calls.
macro_rules! impl_history_store {
    ($store:ty, $db:ty, read: $read:ident) => {
        impl $store {
            pub(crate) async fn prune_settled_sql(
                &self,
                state: $crate::push::DeliveryState,
                settled_before: chrono::DateTime<chrono::Utc>,
                limit: u32,
            ) -> Result<u64, $crate::StoreError> {
                let before = settled_before.timestamp_micros();
                let mut tx = self.begin_write_unsynced().await?;
                // Their attempts go with them (ON DELETE CASCADE). The conditions again at the
                // top: PostgreSQL rechecks a row that a redrive changed meanwhile against these,
                // not against the subquery's snapshot, so a redriven delivery is never deleted.
                let deleted = sqlx::query(
                    "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries \
                     WHERE state = $1 AND next_attempt < $2 ORDER BY next_attempt LIMIT $3) \
                     AND state = $1 AND next_attempt < $2",
                )
                .bind(state.as_str())
                .bind(before)
                .bind(i64::from(limit))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok(deleted)
            }

            pub(crate) async fn history_size_sql(
                &self,
            ) -> Result<$crate::push::HistorySize, $crate::StoreError> {
                use sqlx::Row;
                let row = sqlx::query(
                    "SELECT (SELECT count(*) FROM deliveries WHERE state = 'delivered') AS delivered, \
                     (SELECT count(*) FROM deliveries WHERE state = 'dead') AS dead, \
                     (SELECT count(*) FROM delivery_attempts) AS attempts",
                )
                .fetch_one(&self.$read)
                .await?;
                let count = |name: &str| -> Result<u64, $crate::StoreError> {
                    Ok(u64::try_from(row.try_get::<i64, _>(name)?).unwrap_or(0))
                };
                Ok($crate::push::HistorySize {
                    delivered: count("delivered")?,
                    dead: count("dead")?,
                    attempts: count("attempts")?,
                })
            }
        }
    };
}
pub(crate) use impl_history_store;
