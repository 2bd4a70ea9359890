//! The SQL of [`super::PushStore`], written once and instantiated per backend: `$n` placeholders
//! work on SQLite too, and the few spellings that differ come in as the macro's arguments. (Over
//! 600 lines because it is one trait implementation, which cannot be split across macros; the
//! types and the trait are in `push.rs`, retention in `retention.rs`.)
//!
//! A delivery of an event does not copy the event: its `body` is empty and the lease reads the
//! body from `events` by `event_seq` (retention keeps the events that pending deliveries of live
//! subscriptions still need). Only the validation handshake, which is no stored event, keeps its
//! message in the row.
//!
//! Which commits are synced. The promise is at-least-once delivery of every acknowledged event to
//! every subscription that existed when it was published, and that what the API acknowledged
//! stays done. So the commits that answer a request are synced: the publish (not here), creating
//! a subscription (with its handshake delivery), deleting one, a redrive, a replay (`replay.rs`).
//! The queue's own bookkeeping is not, because losing its last commits to a power cut only
//! repeats work:
//! - `enqueue` moves the dispatch position with the deliveries it inserts, in one transaction: a
//!   lost enqueue takes the position back with it, and the dispatcher enqueues those events again
//!   (the insert ignores what is already there).
//! - `lease` and `release`: a lost lease is a delivery nobody holds, leased again at once.
//! - `record_attempts`: a lost record is a delivery still pending, sent once more (receivers
//!   dedupe by `webhook-id`); a lost "validated" or "disabled" is decided again by the next attempt.
//!
//! Both backends write their log in order and a later synced commit makes every earlier one
//! durable, so a power cut loses a suffix of this bookkeeping, never a hole in it. A crash of the
//! process alone loses nothing (SQLite's unsynced commits are in the OS's page cache, PostgreSQL's
//! in its WAL buffers, flushed within `wal_writer_delay`).

/// Implements [`PushStore`] for a backend: `$store` with pools `$read`/`$write` of database `$db`,
/// `$tip` the SQL of the current end of the log, `$skip_locked` the locking clause of the lease,
/// `$lock_rows` the clause that locks the rows a query reads (empty where the writer is single).
macro_rules! impl_push_store {
    ($store:ty, $db:ty, read: $read:ident, write: $write:ident, tip: $tip:expr, skip_locked: $skip_locked:expr, lock_rows: $lock_rows:expr) => {
        impl $store {
            fn batching_from(
                row: &<$db as sqlx::Database>::Row,
            ) -> Result<$crate::push::Batching, $crate::StoreError> {
                use sqlx::Row;
                Ok($crate::push::Batching {
                    max_events: $crate::push::stored_u32(row.try_get("max_events_per_batch")?),
                    max_wait_ms: $crate::push::stored_u32(row.try_get("max_wait_ms")?),
                })
            }

            fn subscription_from(
                row: &<$db as sqlx::Database>::Row,
            ) -> Result<$crate::push::Subscription, $crate::StoreError> {
                use sqlx::Row;
                Ok($crate::push::Subscription {
                    id: row.try_get("id")?,
                    spec: $crate::push::NewSubscription {
                        end_point: row.try_get("end_point")?,
                        resource_filter: row.try_get("resource_filter")?,
                        source_filter: row.try_get("source_filter")?,
                        subject_filter: row.try_get("subject_filter")?,
                        alternative_subject_filter: row.try_get("alternative_subject_filter")?,
                        type_filter: row.try_get("type_filter")?,
                        include_subunits: row.try_get("include_subunits")?,
                        consumer: row.try_get("consumer")?,
                        created_by: row.try_get("created_by")?,
                        principal: row.try_get("principal")?,
                        secret: row.try_get("secret")?,
                        batching: Self::batching_from(&row)?,
                        rate_limit: row
                            .try_get::<Option<i64>, _>("rate_limit")?
                            .map($crate::push::stored_u32),
                    },
                    created: $crate::micros_to_time(row.try_get("created")?),
                    start_seq: row.try_get("start_seq")?,
                    validated: row.try_get("validated")?,
                    enabled: row.try_get("enabled")?,
                    disabled_reason: row.try_get("disabled_reason")?,
                    health: $crate::push::EndpointHealth {
                        consecutive_failures: u64::try_from(
                            row.try_get::<i64, _>("consecutive_failures")?,
                        )
                        .unwrap_or(0),
                        failing_since: row
                            .try_get::<Option<i64>, _>("failing_since")?
                            .map($crate::micros_to_time),
                        last_success: row
                            .try_get::<Option<i64>, _>("last_success")?
                            .map($crate::micros_to_time),
                        last_failure: row
                            .try_get::<Option<i64>, _>("last_failure")?
                            .map($crate::micros_to_time),
                        last_error: row.try_get("last_error")?,
                        rest_until: row
                            .try_get::<Option<i64>, _>("rest_until")?
                            .map($crate::micros_to_time),
                    },
                    previous_secret: match (
                        row.try_get::<Option<String>, _>("previous_secret")?,
                        row.try_get::<Option<i64>, _>("previous_secret_until")?,
                    ) {
                        (Some(secret), Some(until)) => Some((secret, $crate::micros_to_time(until))),
                        _ => None,
                    },
                })
            }

            async fn subscriptions_where(
                &self,
                filter: &str,
                bind: Option<&str>,
            ) -> Result<Vec<$crate::push::Subscription>, $crate::StoreError> {
                let sql = $crate::push::subscription_select(filter);
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                if let Some(value) = bind {
                    query = query.bind(value.to_owned());
                }
                // Row by row: every live subscription at once as rows first cost several times
                // the subscriptions' own memory at the peak (100,000 of them: hundreds of MiB).
                use futures_util::TryStreamExt;
                let mut rows = query.fetch(&self.$read);
                let mut found = Vec::new();
                while let Some(row) = rows.try_next().await? {
                    found.push(Self::subscription_from(&row)?);
                }
                Ok(found)
            }
        }

        #[async_trait::async_trait]
        impl $crate::push::PushStore for $store {
            async fn create_subscription(
                &self,
                s: &$crate::push::NewSubscription,
                handshake: &(dyn Fn(i64) -> $crate::push::NewDelivery + Send + Sync),
            ) -> Result<$crate::push::Subscription, $crate::StoreError> {
                let now = chrono::Utc::now().timestamp_micros();
                let mut tx = self.begin_write().await?;
                let sql = format!(
                    "INSERT INTO subscriptions (end_point, resource_filter, source_filter, \
                     subject_filter, alternative_subject_filter, type_filter, include_subunits, \
                     consumer, created_by, principal, secret, created, max_events_per_batch, \
                     max_wait_ms, rate_limit, start_seq) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, ({})) \
                     RETURNING id",
                    $tip
                );
                let id: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .bind(&s.end_point)
                    .bind(&s.resource_filter)
                    .bind(&s.source_filter)
                    .bind(&s.subject_filter)
                    .bind(&s.alternative_subject_filter)
                    .bind(&s.type_filter)
                    .bind(s.include_subunits)
                    .bind(&s.consumer)
                    .bind(&s.created_by)
                    .bind(&s.principal)
                    .bind(&s.secret)
                    .bind(now)
                    .bind(i64::from(s.batching.max_events))
                    .bind(i64::from(s.batching.max_wait_ms))
                    .bind(s.rate_limit.map(i64::from))
                    .fetch_one(&mut *tx)
                    .await?;
                let d = handshake(id);
                sqlx::query(
                    "INSERT INTO deliveries (subscription_id, event_seq, event_id, webhook_id, body, \
                     next_attempt, created) VALUES ($1, NULL, $2, $3, $4, $5, $5)",
                )
                .bind(id)
                .bind(&d.event_id)
                .bind(&d.webhook_id)
                .bind(d.body.as_deref().unwrap_or_default())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                sqlx::query($crate::push::BUMP_GENERATION)
                    .execute(&mut *tx)
                    .await?;
                let sql = $crate::push::subscription_select("AND id = $1");
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                let created = Self::subscription_from(&row)?;
                tx.commit().await?;
                Ok(created)
            }

            async fn subscription(
                &self,
                id: i64,
            ) -> Result<Option<$crate::push::Subscription>, $crate::StoreError> {
                let sql = $crate::push::subscription_select("AND id = $1");
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .fetch_optional(&self.$read)
                    .await?;
                row.as_ref().map(Self::subscription_from).transpose()
            }

            async fn subscriptions_with_ids(
                &self,
                ids: &[i64],
            ) -> Result<Vec<$crate::push::Subscription>, $crate::StoreError> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut qb: sqlx::QueryBuilder<$db> =
                    sqlx::QueryBuilder::new($crate::push::subscriptions_not_deleted());
                qb.push(" AND id IN (");
                let mut list = qb.separated(", ");
                for id in ids {
                    list.push_bind(*id);
                }
                qb.push(") ORDER BY id");
                qb.build()
                    .fetch_all(&self.$read)
                    .await?
                    .iter()
                    .map(Self::subscription_from)
                    .collect()
            }

            async fn subscriptions_of(
                &self,
                consumer: &str,
            ) -> Result<Vec<$crate::push::Subscription>, $crate::StoreError> {
                self.subscriptions_where("AND consumer = $1", Some(consumer)).await
            }

            async fn live_subscriptions(
                &self,
            ) -> Result<Vec<$crate::push::Subscription>, $crate::StoreError> {
                self.subscriptions_where("AND enabled", None).await
            }

            async fn subscriptions_to_match(
                &self,
            ) -> Result<Vec<$crate::push::SubscriptionToMatch>, $crate::StoreError> {
                use futures_util::TryStreamExt;
                use sqlx::Row;
                let mut rows = sqlx::query(
                    "SELECT id, start_seq, resource_filter, source_filter, subject_filter, \
                     alternative_subject_filter, type_filter, include_subunits, principal, \
                     max_events_per_batch, max_wait_ms FROM subscriptions \
                     WHERE NOT deleted AND enabled ORDER BY id",
                )
                .fetch(&self.$read);
                let mut found = Vec::new();
                while let Some(row) = rows.try_next().await? {
                    found.push($crate::push::SubscriptionToMatch {
                        id: row.try_get("id")?,
                        start_seq: row.try_get("start_seq")?,
                        resource_filter: row.try_get("resource_filter")?,
                        source_filter: row.try_get("source_filter")?,
                        subject_filter: row.try_get("subject_filter")?,
                        alternative_subject_filter: row.try_get("alternative_subject_filter")?,
                        type_filter: row.try_get("type_filter")?,
                        include_subunits: row.try_get("include_subunits")?,
                        principal: row.try_get("principal")?,
                        batching: Self::batching_from(&row)?,
                    });
                }
                found.shrink_to_fit();
                Ok(found)
            }

            async fn subscription_generation(&self) -> Result<i64, $crate::StoreError> {
                Ok(sqlx::query_scalar(
                    "SELECT generation FROM subscription_generation WHERE singleton",
                )
                .fetch_one(&self.$read)
                .await?)
            }

            async fn delete_subscription(&self, id: i64) -> Result<bool, $crate::StoreError> {
                let mut tx = self.begin_write().await?;
                let deleted = sqlx::query(
                    "UPDATE subscriptions SET deleted = TRUE WHERE id = $1 AND NOT deleted",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if deleted > 0 {
                    sqlx::query($crate::push::BUMP_GENERATION)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query("DELETE FROM deliveries WHERE subscription_id = $1 AND state = 'pending'")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(deleted > 0)
            }

            async fn dispatch_position(&self) -> Result<i64, $crate::StoreError> {
                Ok(sqlx::query_scalar("SELECT seq FROM dispatch_position WHERE singleton")
                    .fetch_one(&self.$read)
                    .await?)
            }

            async fn enqueue(
                &self,
                from: i64,
                to: i64,
                deliveries: &[$crate::push::NewDelivery],
            ) -> Result<bool, $crate::StoreError> {
                let now = chrono::Utc::now().timestamp_micros();
                let mut tx = self.begin_write_unsynced().await?;
                // Taking the row first makes concurrent dispatchers (other nodes) take turns.
                let moved = sqlx::query(
                    "UPDATE dispatch_position SET seq = $2 WHERE singleton AND seq = $1",
                )
                .bind(from)
                .bind(to)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if moved == 0 {
                    return Ok(false);
                }
                let (batches, singles): (Vec<_>, Vec<_>) =
                    deliveries.iter().partition(|d| d.batch.is_some());
                for chunk in singles.chunks($crate::push::DELIVERIES_PER_INSERT) {
                    let mut qb: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(
                        "INSERT INTO deliveries (subscription_id, event_seq, event_id, webhook_id, \
                         body, next_attempt, created) ",
                    );
                    qb.push_values(chunk, |mut row, d| {
                        row.push_bind(d.subscription_id)
                            .push_bind(d.event_seq)
                            .push_bind(d.event_id.clone())
                            .push_bind(d.webhook_id.clone())
                            .push_bind(d.body.clone().unwrap_or_default())
                            // Due now, or when its resting endpoint may be tried again.
                            .push("coalesce((SELECT s.rest_until FROM subscriptions s WHERE s.id = ")
                            .push_bind_unseparated(d.subscription_id)
                            .push_unseparated(" AND s.rest_until > ")
                            .push_bind_unseparated(now)
                            .push_unseparated("), ")
                            .push_bind_unseparated(now)
                            .push_unseparated(")")
                            .push_bind(now);
                    });
                    qb.push(" ON CONFLICT (subscription_id, event_seq, replay_id) DO NOTHING");
                    qb.build().execute(&mut *tx).await?;
                }
                for d in batches {
                    let Some(batch) = &d.batch else { continue };
                    let seqs = batch
                        .seqs
                        .iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(",");
                    let count = i64::try_from(batch.seqs.len()).unwrap_or(i64::MAX);
                    let max = i64::from(batch.batching.max_events);
                    // The open batch's conditions stand at the top level as well: PostgreSQL
                    // checks those again on a row another transaction changed meanwhile (a
                    // worker's lease), not those of the subquery.
                    let joined = sqlx::query(
                        "UPDATE deliveries SET batch_seqs = batch_seqs || ',' || $1, \
                         event_count = event_count + $2, \
                         next_attempt = CASE WHEN event_count + $2 >= $3 THEN $4 ELSE next_attempt END \
                         WHERE id = (SELECT o.id FROM deliveries o WHERE o.subscription_id = $5 \
                             AND o.state = 'pending' AND o.batch_seqs IS NOT NULL AND o.replay_id = 0 \
                             ORDER BY o.id DESC LIMIT 1) \
                         AND state = 'pending' AND attempts = 0 AND lease_owner IS NULL \
                         AND next_attempt > $4 AND event_count + $2 <= $3",
                    )
                    .bind(seqs.clone())
                    .bind(count)
                    .bind(max)
                    .bind(now)
                    .bind(d.subscription_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if joined > 0 {
                        continue;
                    }
                    let due = if count >= max {
                        now
                    } else {
                        now.saturating_add(i64::from(batch.batching.max_wait_ms) * 1000)
                    };
                    sqlx::query(
                        "INSERT INTO deliveries (subscription_id, event_seq, event_id, webhook_id, \
                         body, next_attempt, created, batch_seqs, event_count) \
                         VALUES ($1, $2, $3, $4, '', $5, $6, $7, $8) \
                         ON CONFLICT (subscription_id, event_seq, replay_id) DO NOTHING",
                    )
                    .bind(d.subscription_id)
                    .bind(d.event_seq)
                    .bind(&d.event_id)
                    .bind(&d.webhook_id)
                    .bind(due)
                    .bind(now)
                    .bind(seqs)
                    .bind(count)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn lease(
                &self,
                request: &$crate::push::LeaseRequest<'_>,
            ) -> Result<Vec<$crate::push::LeasedDelivery>, $crate::StoreError> {
                use sqlx::Row;
                let now = request.now.timestamp_micros();
                let mut qb: sqlx::QueryBuilder<$db> =
                    sqlx::QueryBuilder::new("UPDATE deliveries SET lease_owner = ");
                qb.push_bind(request.owner.to_owned())
                    .push(", lease_until = ")
                    .push_bind(request.until.timestamp_micros());
                if !request.wide {
                    if request.room.is_empty() {
                        return Ok(Vec::new());
                    }
                    // The earliest few of each subscription with room, each read from its own
                    // index range (subscription, state, id): the cost is what is taken.
                    qb.push(" WHERE id IN (SELECT d.id FROM deliveries d WHERE d.id IN (");
                    for (i, (id, room)) in request.room.iter().enumerate() {
                        if i > 0 {
                            qb.push(" UNION ALL ");
                        }
                        qb.push(
                            "SELECT id FROM (SELECT c.id FROM deliveries c WHERE c.subscription_id = ",
                        )
                        .push_bind(*id)
                        .push(" AND c.state = 'pending' AND c.next_attempt <= ")
                        .push_bind(now)
                        .push(" AND (c.lease_until IS NULL OR c.lease_until < ")
                        .push_bind(now)
                        .push(
                            ") AND (SELECT s.enabled AND NOT s.deleted \
                             AND (s.validated OR c.event_seq IS NULL) \
                             AND (s.rest_until IS NULL OR s.rest_until <= ",
                        )
                        .push_bind(now)
                        .push(
                            ") FROM subscriptions s WHERE s.id = c.subscription_id) \
                             ORDER BY c.id LIMIT ",
                        )
                        .push_bind(i64::from(*room))
                        .push(format_args!(") p{i}"));
                    }
                    qb.push(")");
                } else {
                    qb.push(
                        " WHERE id IN (SELECT d.id FROM deliveries d WHERE d.id IN (\
                           SELECT id FROM (SELECT w.id, w.subscription_id, row_number() OVER (\
                               PARTITION BY w.subscription_id ORDER BY w.next_attempt, w.id) AS rank \
                             FROM (SELECT c.id, c.subscription_id, c.next_attempt \
                             FROM deliveries c WHERE c.state = 'pending' AND c.next_attempt <= ",
                    )
                    .push_bind(now)
                    .push(" AND (c.lease_until IS NULL OR c.lease_until < ")
                    .push_bind(now)
                    // The subscription's state as a correlated subquery, not a join: a join
                    // lets PostgreSQL hash every due delivery before it can sort and stop, while
                    // this keeps the read in index order, stopping at the slice's end.
                    .push(
                        ") AND (SELECT s.enabled AND NOT s.deleted \
                         AND (s.validated OR c.event_seq IS NULL) \
                         AND (s.rest_until IS NULL OR s.rest_until <= ",
                    )
                    .push_bind(now)
                    .push(") FROM subscriptions s WHERE s.id = c.subscription_id)");
                    if !request.exclude.is_empty() {
                        qb.push(" AND c.subscription_id NOT IN (");
                        let mut ids = qb.separated(", ");
                        for id in request.exclude {
                            ids.push_bind(*id);
                        }
                        qb.push(")");
                    }
                    // The lease conditions again on `d`, the level that locks: PostgreSQL rechecks a
                    // row another node leased meanwhile against these, not against the subquery's
                    // snapshot, so a delivery is never leased twice.
                    // Only the earliest due deliveries are ranked, so a lease costs the same however
                    // long the queue; subscriptions at their cap are excluded above, so the slice is
                    // not filled by one endpoint's backlog.
                    qb.push(" ORDER BY c.next_attempt, c.id LIMIT ")
                        .push_bind(i64::from(request.limit.max(8)).saturating_mul(8))
                        .push(") w) ranked WHERE rank <= ");
                    if request.room.is_empty() {
                        qb.push_bind(i64::from(request.per_subscription.max(1)));
                    } else {
                        qb.push("CASE ranked.subscription_id");
                        for (id, room) in request.room {
                            qb.push(" WHEN ")
                                .push_bind(*id)
                                .push(" THEN ")
                                .push_bind(i64::from(*room));
                        }
                        qb.push(" ELSE ")
                            .push_bind(i64::from(request.per_subscription.max(1)))
                            .push(" END");
                    }
                    qb.push(")");
                }
                qb
                    .push(" AND d.state = 'pending' AND d.next_attempt <= ")
                    .push_bind(now)
                    .push(" AND (d.lease_until IS NULL OR d.lease_until < ")
                    .push_bind(now)
                    .push(") ORDER BY d.next_attempt, d.id LIMIT ")
                    .push_bind(i64::from(request.limit))
                    .push(format_args!(
                        " {}) RETURNING id, subscription_id, event_seq, event_id, webhook_id, \
                         attempts, batch_seqs, replay_id, (SELECT e.traceparent FROM events e \
                         WHERE e.seq = deliveries.event_seq) AS traceparent, coalesce(CASE WHEN body = '' THEN (SELECT e.body FROM events e \
                         WHERE e.seq = deliveries.event_seq) ELSE body END, '') AS body",
                        $skip_locked
                    ));
                let mut tx = self.begin_write_unsynced().await?;
                let rows = qb.build().fetch_all(&mut *tx).await?;
                tx.commit().await?;
                // RETURNING comes in no set order (PostgreSQL's is the heap's); a subscription's
                // deliveries go out in queue order.
                let mut leased = rows
                    .iter()
                    .map(|r| {
                        Ok($crate::push::LeasedDelivery {
                            id: r.try_get("id")?,
                            subscription_id: r.try_get("subscription_id")?,
                            event_seq: r.try_get("event_seq")?,
                            event_id: r.try_get("event_id")?,
                            webhook_id: r.try_get("webhook_id")?,
                            body: r.try_get("body")?,
                            batch: $crate::push::seqs_of(r.try_get("batch_seqs")?),
                            attempts: r.try_get("attempts")?,
                            replay: $crate::push::replay_of(r.try_get("replay_id")?),
                            traceparent: r.try_get("traceparent")?,
                        })
                    })
                    .collect::<Result<Vec<_>, $crate::StoreError>>()?;
                leased.sort_by_key(|d: &$crate::push::LeasedDelivery| d.id);
                Ok(leased)
            }

            async fn event_bodies(
                &self,
                seqs: &[i64],
            ) -> Result<Vec<(i64, String)>, $crate::StoreError> {
                use sqlx::Row;
                if seqs.is_empty() {
                    return Ok(Vec::new());
                }
                let mut qb: sqlx::QueryBuilder<$db> =
                    sqlx::QueryBuilder::new("SELECT seq, body FROM events WHERE seq IN (");
                let mut list = qb.separated(", ");
                for seq in seqs {
                    list.push_bind(*seq);
                }
                qb.push(") ORDER BY seq");
                qb.build()
                    .fetch_all(&self.$read)
                    .await?
                    .iter()
                    .map(|r| Ok((r.try_get("seq")?, r.try_get("body")?)))
                    .collect()
            }

            async fn release(&self, owner: &str) -> Result<u64, $crate::StoreError> {
                let mut tx = self.begin_write_unsynced().await?;
                let released = sqlx::query(
                    "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL \
                     WHERE lease_owner = $1 AND state = 'pending'",
                )
                .bind(owner.to_owned())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok(released)
            }

            async fn release_until(
                &self,
                owner: &str,
                ids: &[i64],
                not_before: chrono::DateTime<chrono::Utc>,
            ) -> Result<u64, $crate::StoreError> {
                if ids.is_empty() {
                    return Ok(0);
                }
                let mut tx = self.begin_write_unsynced().await?;
                let mut qb: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(
                    "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL, \
                     next_attempt = CASE WHEN next_attempt < ",
                );
                let at = not_before.timestamp_micros();
                qb.push_bind(at)
                    .push(" THEN ")
                    .push_bind(at)
                    .push(" ELSE next_attempt END WHERE state = 'pending' AND lease_owner = ")
                    .push_bind(owner.to_owned())
                    .push(" AND id IN (");
                let mut list = qb.separated(", ");
                for id in ids {
                    list.push_bind(*id);
                }
                qb.push(")");
                let released = qb.build().execute(&mut *tx).await?.rows_affected();
                tx.commit().await?;
                Ok(released)
            }

            async fn record_attempts(
                &self,
                records: &[$crate::push::AttemptRecord],
            ) -> Result<Vec<bool>, $crate::StoreError> {
                use sqlx::Row;
                let mut recorded = vec![false; records.len()];
                if records.is_empty() {
                    return Ok(recorded);
                }
                let mut tx = self.begin_write_unsynced().await?;
                if !$lock_rows.is_empty() {
                    // The subscriptions this transaction updates (health, validated, disabled),
                    // locked first and in id order, as every other writer of them does: two
                    // workers recording for the same endpoints never wait for each other in a
                    // circle.
                    let mut ids: Vec<i64> = records.iter().map(|r| r.subscription_id).collect();
                    ids.sort_unstable();
                    ids.dedup();
                    let mut qb: sqlx::QueryBuilder<$db> =
                        sqlx::QueryBuilder::new("SELECT id FROM subscriptions WHERE id IN (");
                    let mut list = qb.separated(", ");
                    for id in &ids {
                        list.push_bind(*id);
                    }
                    qb.push(") ORDER BY id ").push($lock_rows);
                    qb.build().fetch_all(&mut *tx).await?;
                }
                // A set of statements per round rather than per record: each statement is a
                // round trip to the database. A round holds each delivery once, so that the ids
                // an update returns say which records counted.
                for round in $crate::push::rounds_of_distinct_deliveries(records) {
                    let mut qb: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(
                        "UPDATE deliveries SET state = v.column2, attempts = attempts + 1, \
                         next_attempt = v.column3, last_status = v.column4, last_error = v.column5, \
                         lease_owner = NULL, lease_until = NULL FROM (",
                    );
                    qb.push_values(round.iter().map(|i| &records[*i]), |mut row, r| {
                        let (state, next_attempt) = r.next.state_and_time(r.at);
                        row.push_bind(r.delivery_id)
                            .push_bind(state)
                            .push_bind(next_attempt.timestamp_micros())
                            .push_bind(r.status.map(i64::from))
                            .push_bind(r.error.clone())
                            .push_bind(r.lease_owner.clone());
                    });
                    // Nothing updated for a record: someone else holds the delivery now (its lease
                    // ran out), or it was dropped with its subscription; theirs is the record
                    // that counts.
                    qb.push(
                        ") AS v WHERE deliveries.id = v.column1 AND deliveries.lease_owner = v.column6 \
                         RETURNING deliveries.id",
                    );
                    let updated: std::collections::HashSet<i64> = qb
                        .build()
                        .fetch_all(&mut *tx)
                        .await?
                        .iter()
                        .map(|row| row.try_get::<i64, _>(0))
                        .collect::<Result<_, _>>()?;
                    let counted: Vec<usize> = round
                        .into_iter()
                        .filter(|i| updated.contains(&records[*i].delivery_id))
                        .collect();
                    if counted.is_empty() {
                        continue;
                    }
                    let mut qb: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(
                        "INSERT INTO delivery_attempts (delivery_id, at, status, error) ",
                    );
                    qb.push_values(counted.iter().map(|i| &records[*i]), |mut row, r| {
                        row.push_bind(r.delivery_id)
                            .push_bind(r.at.timestamp_micros())
                            .push_bind(r.status.map(i64::from))
                            .push_bind(r.error.clone());
                    });
                    qb.build().execute(&mut *tx).await?;
                    let changes = $crate::push::health::endpoint_changes(
                        counted.iter().map(|i| &records[*i]),
                    );
                    <$store>::apply_endpoint_changes(&mut tx, &changes).await?;
                    for i in counted {
                        recorded[i] = true;
                        let r = &records[i];
                        if r.validates {
                            sqlx::query(
                                "UPDATE subscriptions SET validated = TRUE \
                                 WHERE id = $1 AND ($2 IS NULL OR end_point = $2)",
                            )
                            .bind(r.subscription_id)
                            .bind(r.end_point.clone())
                            .execute(&mut *tx)
                            .await?;
                        }
                        if let Some(disable) = &r.disable {
                            sqlx::query(
                                "UPDATE subscriptions SET enabled = FALSE, disabled_reason = $2 \
                                 WHERE id = $1 AND ($3 IS NULL \
                                     OR (consecutive_failures > 0 AND failing_since = $3)) \
                                 AND ($4 IS NULL OR end_point = $4)",
                            )
                            .bind(r.subscription_id)
                            .bind(&disable.reason)
                            .bind(disable.streak_began.map(|t| t.timestamp_micros()))
                            .bind(r.end_point.clone())
                            .execute(&mut *tx)
                            .await?;
                            sqlx::query($crate::push::BUMP_GENERATION)
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                }
                tx.commit().await?;
                Ok(recorded)
            }

            async fn deliveries(
                &self,
                subscription_id: i64,
                state: Option<$crate::push::DeliveryState>,
                limit: u32,
            ) -> Result<Vec<$crate::push::DeliveryView>, $crate::StoreError> {
                use sqlx::Row;
                let mut qb: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(
                    "SELECT id, event_id, webhook_id, event_count, state, attempts, next_attempt, \
                     last_status, last_error, replay_id FROM deliveries WHERE subscription_id = ",
                );
                qb.push_bind(subscription_id);
                if let Some(state) = state {
                    qb.push(" AND state = ").push_bind(state.as_str());
                }
                qb.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(limit));
                let rows = qb.build().fetch_all(&self.$read).await?;
                let mut views = Vec::with_capacity(rows.len());
                for r in &rows {
                    let state: String = r.try_get("state")?;
                    let state = $crate::push::DeliveryState::parse(&state)
                        .unwrap_or($crate::push::DeliveryState::Pending);
                    let next: i64 = r.try_get("next_attempt")?;
                    views.push($crate::push::DeliveryView {
                        id: r.try_get("id")?,
                        event_id: r.try_get("event_id")?,
                        webhook_id: r.try_get("webhook_id")?,
                        event_count: r.try_get("event_count")?,
                        state,
                        attempts: r.try_get("attempts")?,
                        next_attempt: (state == $crate::push::DeliveryState::Pending)
                            .then(|| $crate::micros_to_time(next)),
                        last_status: $crate::push::status_of(r.try_get("last_status")?),
                        last_error: r.try_get("last_error")?,
                        replay: $crate::push::replay_of(r.try_get("replay_id")?),
                        history: Vec::new(),
                    });
                }
                if views.is_empty() {
                    return Ok(views);
                }
                let mut qb: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(
                    "SELECT delivery_id, at, status, error FROM delivery_attempts WHERE delivery_id IN (",
                );
                let mut ids = qb.separated(", ");
                for v in &views {
                    ids.push_bind(v.id);
                }
                qb.push(") ORDER BY id");
                for r in qb.build().fetch_all(&self.$read).await? {
                    let delivery_id: i64 = r.try_get("delivery_id")?;
                    if let Some(view) = views.iter_mut().find(|v| v.id == delivery_id) {
                        view.history.push($crate::push::AttemptView {
                            at: $crate::micros_to_time(r.try_get("at")?),
                            status: $crate::push::status_of(r.try_get("status")?),
                            error: r.try_get("error")?,
                        });
                    }
                }
                Ok(views)
            }

            async fn redrive(
                &self,
                subscription_id: i64,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<u64, $crate::StoreError> {
                let mut tx = self.begin_write().await?;
                let requeued = sqlx::query(
                    "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt = $2, \
                     lease_owner = NULL, lease_until = NULL \
                     WHERE subscription_id = $1 AND state = 'dead'",
                )
                .bind(subscription_id)
                .bind(now.timestamp_micros())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                // Asking for a redrive says the endpoint is fixed: a subscription disabled by its
                // failures takes deliveries again.
                sqlx::query(
                    "UPDATE subscriptions SET enabled = TRUE, disabled_reason = NULL, \
                     consecutive_failures = 0, failing_since = NULL, rest_until = NULL WHERE id = $1",
                )
                .bind(subscription_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query($crate::push::DUE_NOW)
                    .bind(subscription_id)
                    .bind(now.timestamp_micros())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query($crate::push::BUMP_GENERATION)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(requeued)
            }

            async fn stored_replay(
                &self,
                subscription_id: i64,
                key: &str,
            ) -> Result<Option<$crate::push::StoredReplay>, $crate::StoreError> {
                <$store>::select_replay(self, subscription_id, key).await
            }

            async fn store_replay(
                &self,
                replay: &$crate::push::NewReplay,
            ) -> Result<$crate::push::ReplayOutcome, $crate::StoreError> {
                <$store>::insert_replay(self, replay).await
            }

            async fn defer_resting(
                &self,
                subscription_id: i64,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<u64, $crate::StoreError> {
                <$store>::defer_resting_sql(self, subscription_id, now).await
            }

            async fn change_subscription(
                &self,
                id: i64,
                change: &$crate::push::SubscriptionChange,
                handshake: &(dyn Fn(i64) -> $crate::push::NewDelivery + Send + Sync),
            ) -> Result<bool, $crate::StoreError> {
                <$store>::change_subscription_sql(self, id, change, handshake).await
            }

            async fn claim_permit(
                &self,
                subscription_id: i64,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<$crate::push::Permit, $crate::StoreError> {
                <$store>::claim_permit_sql(self, subscription_id, now).await
            }

            async fn stored_secrets(
                &self,
            ) -> Result<Vec<$crate::push::StoredSecrets>, $crate::StoreError> {
                <$store>::stored_secrets_sql(self).await
            }

            async fn replace_secrets(
                &self,
                replaced: &[($crate::push::StoredSecrets, $crate::push::StoredSecrets)],
            ) -> Result<u64, $crate::StoreError> {
                <$store>::replace_secrets_sql(self, replaced).await
            }

            async fn enable_subscription(&self, id: i64) -> Result<bool, $crate::StoreError> {
                <$store>::enable_subscription_sql(self, id).await
            }

            async fn subscription_states(
                &self,
            ) -> Result<$crate::push::SubscriptionStates, $crate::StoreError> {
                <$store>::subscription_states_sql(self).await
            }

            async fn prune_settled(
                &self,
                state: $crate::push::DeliveryState,
                settled_before: chrono::DateTime<chrono::Utc>,
                limit: u32,
            ) -> Result<u64, $crate::StoreError> {
                <$store>::prune_settled_sql(self, state, settled_before, limit).await
            }

            async fn history_size(&self) -> Result<$crate::push::HistorySize, $crate::StoreError> {
                <$store>::history_size_sql(self).await
            }

            async fn queue_depth(
                &self,
            ) -> Result<(u64, Option<chrono::DateTime<chrono::Utc>>), $crate::StoreError> {
                use sqlx::Row;
                let row = sqlx::query(
                    "SELECT count(*) AS n, min(created) AS oldest FROM deliveries WHERE state = 'pending'",
                )
                .fetch_one(&self.$read)
                .await?;
                let n: i64 = row.try_get("n")?;
                let oldest: Option<i64> = row.try_get("oldest")?;
                Ok((u64::try_from(n).unwrap_or(0), oldest.map($crate::micros_to_time)))
            }
        }
    };
}

pub(crate) use impl_push_store;
