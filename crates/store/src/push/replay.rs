//! Replays: a subscription's owner asks for a window of stored events again, after an outage of
//! its own. A replay is one row in `replays` (its request key makes a repeat of the request a
//! no-op) and one new delivery per event (or batch), which names the replay in `replay_id` so that
//! an event can be queued once live and once per replay. The commit is synced: the API
//! acknowledges a replay, and an acknowledged replay must not be lost to a power cut.

/// A replay as its owner asked for it, with the deliveries it queues (in log order).
#[derive(Debug, Clone, PartialEq)]
pub struct NewReplay {
    pub subscription_id: i64,
    /// The owner's key for the request: the same key again is the same replay.
    pub key: String,
    /// The window as asked for (canonical JSON), so that a key reused for another window is
    /// told apart from a repeat.
    pub request: String,
    pub deliveries: Vec<super::NewDelivery>,
}

/// A replay already stored under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReplay {
    pub id: i64,
    pub request: String,
    pub queued: u64,
}

/// What storing a replay did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// Queued now, as replay `id`.
    Queued { id: i64, queued: u64 },
    /// The key was taken first (by a concurrent request, or an earlier one): nothing was queued
    /// now; this is what the key names.
    Taken(StoredReplay),
}

/// The replay a delivery belongs to, as `replay_id` stores it (0: a live delivery).
pub(crate) fn replay_of(stored: i64) -> Option<i64> {
    (stored != 0).then_some(stored)
}

/// Columns of a replay's delivery rows: 10 bound values each, within SQLite's 32,766.
pub(crate) const REPLAY_DELIVERIES_PER_INSERT: usize = 1000;

/// Implements the replay half of [`super::PushStore`] as inherent methods of `$store` (the trait
/// implementation in `backend.rs` calls them), so that `backend.rs` stays the queue's.
macro_rules! impl_replay_store {
    ($store:ty, $db:ty, read: $read:ident) => {
        impl $store {
            pub(crate) async fn select_replay(
                &self,
                subscription_id: i64,
                key: &str,
            ) -> Result<Option<$crate::push::StoredReplay>, $crate::StoreError> {
                self.stored_replay_in(&self.$read, subscription_id, key)
                    .await
            }

            async fn stored_replay_in<'e, E>(
                &self,
                executor: E,
                subscription_id: i64,
                key: &str,
            ) -> Result<Option<$crate::push::StoredReplay>, $crate::StoreError>
            where
                E: sqlx::Executor<'e, Database = $db>,
            {
                use sqlx::Row;
                let row = sqlx::query(
                    "SELECT id, request, queued FROM replays \
                     WHERE subscription_id = $1 AND request_key = $2",
                )
                .bind(subscription_id)
                .bind(key)
                .fetch_optional(executor)
                .await?;
                row.map(|r| {
                    Ok($crate::push::StoredReplay {
                        id: r.try_get("id")?,
                        request: r.try_get("request")?,
                        queued: u64::try_from(r.try_get::<i64, _>("queued")?).unwrap_or(0),
                    })
                })
                .transpose()
            }

            pub(crate) async fn insert_replay(
                &self,
                replay: &$crate::push::NewReplay,
            ) -> Result<$crate::push::ReplayOutcome, $crate::StoreError> {
                let now = chrono::Utc::now().timestamp_micros();
                let queued = i64::try_from(replay.deliveries.len()).unwrap_or(i64::MAX);
                let mut tx = self.begin_write().await?;
                // The key first: of two concurrent requests with one key, one inserts and the
                // other finds nothing inserted and reads what the first stored.
                let id: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO replays (subscription_id, request_key, request, queued, created) \
                     VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (subscription_id, request_key) DO NOTHING RETURNING id",
                )
                .bind(replay.subscription_id)
                .bind(&replay.key)
                .bind(&replay.request)
                .bind(queued)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(id) = id else {
                    let taken = self
                        .stored_replay_in(&mut *tx, replay.subscription_id, &replay.key)
                        .await?;
                    tx.rollback().await?;
                    return match taken {
                        Some(taken) => Ok($crate::push::ReplayOutcome::Taken(taken)),
                        // The key's row conflicted, so it is there (read committed sees it).
                        None => Err($crate::StoreError::Database(sqlx::Error::RowNotFound)),
                    };
                };
                for chunk in replay
                    .deliveries
                    .chunks($crate::push::REPLAY_DELIVERIES_PER_INSERT)
                {
                    let mut qb: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(
                        "INSERT INTO deliveries (subscription_id, event_seq, event_id, webhook_id, \
                         body, next_attempt, created, batch_seqs, event_count, replay_id) ",
                    );
                    qb.push_values(chunk, |mut row, d| {
                        let seqs = d.batch.as_ref().map(|b| {
                            b.seqs
                                .iter()
                                .map(i64::to_string)
                                .collect::<Vec<_>>()
                                .join(",")
                        });
                        let count = d
                            .batch
                            .as_ref()
                            .map_or(1, |b| i64::try_from(b.seqs.len()).unwrap_or(i64::MAX));
                        row.push_bind(d.subscription_id)
                            .push_bind(d.event_seq)
                            .push_bind(d.event_id.clone())
                            .push_bind(d.webhook_id.clone())
                            .push_bind("")
                            .push_bind(now)
                            .push_bind(now)
                            .push_bind(seqs)
                            .push_bind(count)
                            .push_bind(id);
                    });
                    qb.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok($crate::push::ReplayOutcome::Queued {
                    id,
                    queued: u64::try_from(queued).unwrap_or(0),
                })
            }
        }
    };
}
pub(crate) use impl_replay_store;
