//! Endpoint health, kept per subscription from the attempts the workers record: the streak of
//! failures since the last success, when it began, the last success and failure and the last
//! error's class, and the rest a failing endpoint takes (no delivery of it is leased before
//! `rest_until`). The workers decide the rest and when a streak has lasted long enough to disable
//! the subscription; the store keeps the figures and applies the rest to the queue.

use chrono::{DateTime, Utc};

use super::AttemptRecord;

/// How a subscription's endpoint has been doing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointHealth {
    /// Failed attempts since the last success.
    pub consecutive_failures: u64,
    /// The first failure of the current streak; `None` while healthy.
    pub failing_since: Option<DateTime<Utc>>,
    /// Kept to within a second: a busy endpoint's every success is not a write.
    pub last_success: Option<DateTime<Utc>>,
    pub last_failure: Option<DateTime<Utc>>,
    /// The class of the last failure (`timeout`, `connect`, `status 503`, …).
    pub last_error: Option<String>,
    /// No delivery of the subscription is leased before this.
    pub rest_until: Option<DateTime<Utc>>,
}

/// What an attempt says about the endpoint; `None` in a record for an attempt that sent nothing
/// (the event is gone, the subscriber may no longer read it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointReport {
    Success,
    Failure {
        class: String,
        /// The endpoint rests until then.
        rest_until: DateTime<Utc>,
    },
}

/// The health change of one subscription from one round of records, in their order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EndpointChange {
    pub subscription_id: i64,
    /// The round's last success.
    pub success: Option<DateTime<Utc>>,
    /// Failures after it (or in all, without one).
    pub failures: i64,
    pub first_failure: Option<DateTime<Utc>>,
    pub last_failure: Option<(DateTime<Utc>, String)>,
    pub rest_until: Option<DateTime<Utc>>,
    /// The endpoint the round's last record went to (see [`AttemptRecord::end_point`]).
    pub end_point: Option<String>,
}

/// The changes that `records` (those that counted) make, per subscription in id order.
pub(crate) fn endpoint_changes<'a>(
    records: impl IntoIterator<Item = &'a AttemptRecord>,
) -> Vec<EndpointChange> {
    let mut changes: std::collections::BTreeMap<i64, EndpointChange> = Default::default();
    for record in records {
        let Some(report) = &record.endpoint else {
            continue;
        };
        let change = changes
            .entry(record.subscription_id)
            .or_insert_with(|| EndpointChange {
                subscription_id: record.subscription_id,
                success: None,
                failures: 0,
                first_failure: None,
                last_failure: None,
                rest_until: None,
                end_point: None,
            });
        change.end_point = record.end_point.clone();
        match report {
            EndpointReport::Success => {
                change.success = Some(change.success.map_or(record.at, |s| s.max(record.at)));
                change.failures = 0;
                change.first_failure = None;
                change.rest_until = None;
            }
            EndpointReport::Failure { class, rest_until } => {
                change.failures += 1;
                change.first_failure.get_or_insert(record.at);
                change.last_failure = Some((record.at, class.clone()));
                change.rest_until = Some(
                    change
                        .rest_until
                        .map_or(*rest_until, |r| r.max(*rest_until)),
                );
            }
        }
    }
    changes.into_values().collect()
}

/// Queued deliveries one deferral moves at the most, so that a long queue is moved in short
/// transactions rather than in one that holds the writer.
pub const DEFER_CHUNK: u32 = 2000;

/// Implements endpoint health for `$store` as inherent methods that the push store's trait
/// implementation calls.
macro_rules! impl_health_store {
    ($store:ty, $db:ty, read: $read:ident) => {
        impl $store {
            /// Applies a round's health changes, in the round's transaction.
            pub(crate) async fn apply_endpoint_changes(
                tx: &mut sqlx::Transaction<'static, $db>,
                changes: &[$crate::push::health::EndpointChange],
            ) -> Result<(), $crate::StoreError> {
                let healthy: Vec<&$crate::push::health::EndpointChange> = changes
                    .iter()
                    .filter(|c| c.success.is_some() && c.failures == 0)
                    .collect();
                if let Some(at) = healthy.iter().filter_map(|c| c.success).max() {
                    // A healthy endpoint's success is written at most once a second.
                    let at = at.timestamp_micros();
                    let mut qb: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(
                        "UPDATE subscriptions SET consecutive_failures = 0, failing_since = NULL, \
                         rest_until = NULL, last_success = ",
                    );
                    qb.push_bind(at).push(" WHERE (");
                    for (i, change) in healthy.iter().enumerate() {
                        if i > 0 {
                            qb.push(" OR ");
                        }
                        qb.push("(id = ").push_bind(change.subscription_id);
                        if let Some(end_point) = &change.end_point {
                            qb.push(" AND end_point = ").push_bind(end_point.clone());
                        }
                        qb.push(")");
                    }
                    qb.push(") AND (consecutive_failures <> 0 OR last_success IS NULL OR last_success < ")
                        .push_bind(at - 1_000_000)
                        .push(")");
                    qb.build().execute(&mut **tx).await?;
                }
                for change in changes.iter().filter(|c| c.failures > 0) {
                    let (last_at, class) = change
                        .last_failure
                        .clone()
                        .map(|(at, class)| (Some(at.timestamp_micros()), Some(class)))
                        .unwrap_or((None, None));
                    let first = change.first_failure.map(|t| t.timestamp_micros());
                    let rest = change.rest_until.map(|t| t.timestamp_micros());
                    let query = if let Some(success) = change.success {
                        // A success in the round: the streak is what came after it.
                        sqlx::query(
                            "UPDATE subscriptions SET consecutive_failures = $2, failing_since = $3, \
                             last_failure = $4, last_error = $5, rest_until = $6, last_success = $7 \
                             WHERE id = $1 AND ($8 IS NULL OR end_point = $8)",
                        )
                        .bind(change.subscription_id)
                        .bind(change.failures)
                        .bind(first)
                        .bind(last_at)
                        .bind(class)
                        .bind(rest)
                        .bind(success.timestamp_micros())
                        .bind(change.end_point.clone())
                    } else {
                        sqlx::query(
                            "UPDATE subscriptions SET consecutive_failures = consecutive_failures + $2, \
                             failing_since = coalesce(failing_since, $3), last_failure = $4, \
                             last_error = $5, rest_until = CASE WHEN rest_until IS NULL \
                             OR rest_until < $6 THEN $6 ELSE rest_until END \
                             WHERE id = $1 AND ($7 IS NULL OR end_point = $7)",
                        )
                        .bind(change.subscription_id)
                        .bind(change.failures)
                        .bind(first)
                        .bind(last_at)
                        .bind(class)
                        .bind(rest)
                        .bind(change.end_point.clone())
                    };
                    query.execute(&mut **tx).await?;
                }
                Ok(())
            }

            pub(crate) async fn defer_resting_sql(
                &self,
                subscription_id: i64,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<u64, $crate::StoreError> {
                let now = now.timestamp_micros();
                let mut tx = self.begin_write_unsynced().await?;
                let moved = sqlx::query(
                    "UPDATE deliveries SET next_attempt = (SELECT s.rest_until FROM subscriptions s \
                         WHERE s.id = deliveries.subscription_id) \
                     WHERE id IN (SELECT d.id FROM deliveries d, subscriptions s \
                         WHERE d.subscription_id = $1 AND s.id = $1 AND d.state = 'pending' \
                         AND s.rest_until > $2 AND d.next_attempt < s.rest_until \
                         AND (d.lease_until IS NULL OR d.lease_until < $2) LIMIT $3) \
                     AND state = 'pending' AND (lease_until IS NULL OR lease_until < $2)",
                )
                .bind(subscription_id)
                .bind(now)
                .bind(i64::from($crate::push::health::DEFER_CHUNK))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok(moved)
            }

            pub(crate) async fn subscription_states_sql(
                &self,
            ) -> Result<$crate::push::SubscriptionStates, $crate::StoreError> {
                use sqlx::Row;
                let row = sqlx::query(
                    "SELECT \
                       coalesce(sum(CASE WHEN enabled AND consecutive_failures = 0 THEN 1 ELSE 0 END), 0) AS healthy, \
                       coalesce(sum(CASE WHEN enabled AND consecutive_failures > 0 THEN 1 ELSE 0 END), 0) AS failing, \
                       coalesce(sum(CASE WHEN enabled THEN 0 ELSE 1 END), 0) AS disabled \
                     FROM subscriptions WHERE NOT deleted",
                )
                .fetch_one(&self.$read)
                .await?;
                let count = |name: &str| -> Result<u64, $crate::StoreError> {
                    Ok(u64::try_from(row.try_get::<i64, _>(name)?).unwrap_or(0))
                };
                Ok($crate::push::SubscriptionStates {
                    healthy: count("healthy")?,
                    failing: count("failing")?,
                    disabled: count("disabled")?,
                })
            }

            pub(crate) async fn enable_subscription_sql(
                &self,
                id: i64,
            ) -> Result<bool, $crate::StoreError> {
                let mut tx = self.begin_write().await?;
                let enabled = sqlx::query(
                    "UPDATE subscriptions SET enabled = TRUE, disabled_reason = NULL, \
                     consecutive_failures = 0, failing_since = NULL, rest_until = NULL \
                     WHERE id = $1 AND NOT deleted",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if enabled > 0 {
                    sqlx::query($crate::push::BUMP_GENERATION)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query($crate::push::DUE_NOW)
                    .bind(id)
                    .bind(chrono::Utc::now().timestamp_micros())
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(enabled > 0)
            }
        }
    };
}
pub(crate) use impl_health_store;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::Next;

    fn record(subscription_id: i64, ms: i64, report: Option<EndpointReport>) -> AttemptRecord {
        AttemptRecord {
            delivery_id: ms,
            subscription_id,
            lease_owner: "w".into(),
            at: DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::milliseconds(ms),
            status: None,
            error: None,
            next: Next::Delivered,
            validates: false,
            disable: None,
            endpoint: report,
            end_point: None,
        }
    }

    fn failure(rest_ms: i64) -> Option<EndpointReport> {
        Some(EndpointReport::Failure {
            class: format!("status {rest_ms}"),
            rest_until: DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::milliseconds(rest_ms),
        })
    }

    #[test]
    fn a_round_counts_the_failures_after_its_last_success() {
        let at = |ms| DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::milliseconds(ms);
        let records = [
            record(1, 1, failure(100)),
            record(2, 2, Some(EndpointReport::Success)),
            record(1, 3, Some(EndpointReport::Success)),
            record(1, 4, failure(300)),
            record(1, 5, failure(200)),
            record(3, 6, None),
            record(4, 7, failure(50)),
        ];
        let changes = endpoint_changes(&records);
        assert_eq!(changes.len(), 3, "subscription 3 sent nothing");
        assert_eq!(
            changes[0],
            EndpointChange {
                subscription_id: 1,
                success: Some(at(3)),
                failures: 2,
                first_failure: Some(at(4)),
                last_failure: Some((at(5), "status 200".into())),
                rest_until: Some(at(300)),
                end_point: None,
            }
        );
        assert_eq!(changes[1].success, Some(at(2)));
        assert_eq!(changes[1].failures, 0);
        assert_eq!(changes[1].rest_until, None);
        assert_eq!((changes[2].success, changes[2].failures), (None, 1));
    }
}
