//! Retention: the SQL that drops events registered before a cut-off, written once for both
//! backends (`$n` placeholders work on SQLite too). A cut-off becomes a sequence number through
//! the `commits` table, so whole commits go, oldest first, and the cursor never sees a gap open
//! inside a page it already read.
//!
//! Deliveries read their event's body from `events` when leased (see `push::backend`), so the cut
//! stops below the oldest event that a pending delivery of a live (enabled, not deleted)
//! subscription still has to send: a slow or failing endpoint holds retention back until its
//! deliveries are sent or dead, never the other way round. Deliveries of the events that go, in
//! any state, go with them (with their attempt history): a dead one could not be redriven without
//! its event, and a disabled subscription's queue does not outlive the retention period.

/// Implements `delete_through` for backend `$store` of database `$db`: in the caller's write
/// transaction, deletes every event of the commits registered before `cutoff` (microseconds) that
/// no live subscription still waits to send, those commits and the deliveries of those events,
/// and answers how many events went.
macro_rules! impl_retention {
    ($store:ty, $db:ty) => {
        impl $store {
            async fn delete_through(
                tx: &mut sqlx::Transaction<'static, $db>,
                cutoff: i64,
            ) -> Result<u64, $crate::StoreError> {
                use sqlx::Row;
                let cut: Option<i64> = sqlx::query(
                    "SELECT max(last_seq) FROM commits WHERE registered < $1 \
                     AND last_seq < coalesce((SELECT min(d.event_seq) FROM deliveries d \
                         JOIN subscriptions s ON s.id = d.subscription_id \
                         WHERE d.state = 'pending' AND d.event_seq IS NOT NULL \
                         AND s.enabled AND NOT s.deleted), $2)",
                )
                .bind(cutoff)
                .bind(i64::MAX)
                .fetch_one(&mut **tx)
                .await?
                .try_get(0)?;
                let Some(cut) = cut else {
                    return Ok(0);
                };
                sqlx::query("DELETE FROM deliveries WHERE event_seq <= $1")
                    .bind(cut)
                    .execute(&mut **tx)
                    .await?;
                let deleted = sqlx::query("DELETE FROM events WHERE seq <= $1")
                    .bind(cut)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
                sqlx::query("DELETE FROM commits WHERE last_seq <= $1")
                    .bind(cut)
                    .execute(&mut **tx)
                    .await?;
                Ok(deleted)
            }
        }
    };
}

pub(crate) use impl_retention;
