//! Changing a subscription after it was created: a new endpoint (validated with a handshake
//! before any delivery goes to it; what is queued stays queued) and a new secret (the previous
//! one keeps signing beside it for a while). Filters and batching do not change: a subscription
//! matches what it matched when it was created.

use chrono::{DateTime, Utc};

/// What a change asks for; `None` leaves a field as it is.
#[derive(Clone, PartialEq, Eq)]
pub struct SubscriptionChange {
    pub end_point: Option<String>,
    /// `Some(None)` removes the secret.
    pub secret: Option<Option<String>>,
    /// `Some(None)` removes the rate limit.
    pub rate_limit: Option<Option<u32>>,
    /// Until when the secret being replaced still signs.
    pub previous_secret_until: DateTime<Utc>,
}

impl std::fmt::Debug for SubscriptionChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionChange")
            .field("end_point", &self.end_point)
            .field(
                "secret",
                &self.secret.as_ref().map(|s| s.as_ref().map(|_| "…")),
            )
            .field("rate_limit", &self.rate_limit)
            .field("previous_secret_until", &self.previous_secret_until)
            .finish()
    }
}

/// The answer to a claim of a rate-limited subscription's next send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// It may go at this time (now, or within a second).
    At(DateTime<Utc>),
    /// The next second's permits are all taken: ask again later.
    Busy,
    /// The subscription has no limit (any more).
    Unlimited,
}

/// A subscription's secrets as stored (sealed, or from before secrets were sealed), for sealing
/// them again under a new key.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSecrets {
    pub id: i64,
    pub secret: Option<String>,
    pub previous_secret: Option<String>,
}

impl std::fmt::Debug for StoredSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSecrets")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Implements subscription changes for `$store` as inherent methods that the push store's trait
/// implementation calls.
macro_rules! impl_change_store {
    ($store:ty, $db:ty, write: $write:ident) => {
        impl $store {
            pub(crate) async fn change_subscription_sql(
                &self,
                id: i64,
                change: &$crate::push::SubscriptionChange,
                handshake: &(dyn Fn(i64) -> $crate::push::NewDelivery + Send + Sync),
            ) -> Result<bool, $crate::StoreError> {
                let now = chrono::Utc::now().timestamp_micros();
                let mut tx = self.begin_write().await?;
                let exists: Option<i64> =
                    sqlx::query_scalar("SELECT id FROM subscriptions WHERE id = $1 AND NOT deleted")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                if exists.is_none() {
                    return Ok(false);
                }
                if let Some(end_point) = &change.end_point {
                    // Deliveries wait (the lease takes only validated subscriptions' events)
                    // until the new endpoint answers its handshake. What the old endpoint's
                    // failures said (its streak, its rest) is no verdict on the new one.
                    let changed = sqlx::query(
                        "UPDATE subscriptions SET end_point = $2, validated = FALSE, \
                         consecutive_failures = 0, failing_since = NULL, rest_until = NULL \
                         WHERE id = $1 AND end_point <> $2",
                    )
                    .bind(id)
                    .bind(end_point)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if changed > 0 {
                        // A handshake still pending went (or goes) to the old endpoint: its
                        // answer must not validate the new one. A worker holding it finds it
                        // gone when it records, and records nothing.
                        sqlx::query(
                            "DELETE FROM deliveries WHERE subscription_id = $1 \
                             AND event_seq IS NULL AND state = 'pending'",
                        )
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                        let d = handshake(id);
                        sqlx::query(
                            "INSERT INTO deliveries (subscription_id, event_seq, event_id, \
                             webhook_id, body, next_attempt, created) \
                             VALUES ($1, NULL, $2, $3, $4, $5, $5)",
                        )
                        .bind(id)
                        .bind(&d.event_id)
                        .bind(&d.webhook_id)
                        .bind(d.body.as_deref().unwrap_or_default())
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        // What waited for the old endpoint's rest waits no longer: it goes to
                        // the new one once its handshake is answered.
                        sqlx::query($crate::push::DUE_NOW)
                            .bind(id)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                if let Some(secret) = &change.secret {
                    // Removing the secret stops signing at once: there is nothing to switch to.
                    sqlx::query(
                        "UPDATE subscriptions SET \
                         previous_secret = CASE WHEN $2 IS NULL THEN NULL ELSE secret END, \
                         previous_secret_until = CASE WHEN $2 IS NULL OR secret IS NULL THEN NULL \
                             ELSE $3 END, \
                         secret = $2 WHERE id = $1",
                    )
                    .bind(id)
                    .bind(secret)
                    .bind(change.previous_secret_until.timestamp_micros())
                    .execute(&mut *tx)
                    .await?;
                }
                if let Some(rate_limit) = change.rate_limit {
                    sqlx::query("UPDATE subscriptions SET rate_limit = $2 WHERE id = $1")
                        .bind(id)
                        .bind(rate_limit.map(i64::from))
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            pub(crate) async fn claim_permit_sql(
                &self,
                subscription_id: i64,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<$crate::push::Permit, $crate::StoreError> {
                let now = now.timestamp_micros();
                let mut tx = self.begin_write_unsynced().await?;
                // GCRA: the permit is at the theoretical arrival time (or now, if that passed),
                // which moves on by one interval; claims reach at most a second ahead.
                let next: Option<(i64, i64)> = sqlx::query_as(
                    "UPDATE subscriptions SET rate_tat = \
                         CASE WHEN rate_tat IS NULL OR rate_tat < $2 THEN $2 ELSE rate_tat END \
                         + 1000000 / rate_limit \
                     WHERE id = $1 AND rate_limit IS NOT NULL AND rate_limit > 0 \
                     AND (rate_tat IS NULL OR rate_tat < $2 + 1000000) \
                     RETURNING rate_tat, rate_limit",
                )
                .bind(subscription_id)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                let permit = match next {
                    Some((tat, rate)) => $crate::push::Permit::At($crate::micros_to_time(
                        tat - 1_000_000 / rate.max(1),
                    )),
                    None => {
                        let limit: Option<Option<i64>> = sqlx::query_scalar(
                            "SELECT rate_limit FROM subscriptions WHERE id = $1",
                        )
                        .bind(subscription_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                        match limit.flatten() {
                            Some(_) => $crate::push::Permit::Busy,
                            None => $crate::push::Permit::Unlimited,
                        }
                    }
                };
                tx.commit().await?;
                Ok(permit)
            }

            pub(crate) async fn stored_secrets_sql(
                &self,
            ) -> Result<Vec<$crate::push::StoredSecrets>, $crate::StoreError> {
                use sqlx::Row;
                let rows = sqlx::query(
                    "SELECT id, secret, previous_secret FROM subscriptions \
                     WHERE secret IS NOT NULL OR previous_secret IS NOT NULL ORDER BY id",
                )
                .fetch_all(&self.$write)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok($crate::push::StoredSecrets {
                            id: r.try_get("id")?,
                            secret: r.try_get("secret")?,
                            previous_secret: r.try_get("previous_secret")?,
                        })
                    })
                    .collect()
            }

            pub(crate) async fn replace_secrets_sql(
                &self,
                replaced: &[($crate::push::StoredSecrets, $crate::push::StoredSecrets)],
            ) -> Result<u64, $crate::StoreError> {
                let mut tx = self.begin_write().await?;
                let mut count = 0;
                for (was, becomes) in replaced {
                    count += sqlx::query(
                        "UPDATE subscriptions SET secret = $2, previous_secret = $3 WHERE id = $1 \
                         AND secret IS NOT DISTINCT FROM $4 \
                         AND previous_secret IS NOT DISTINCT FROM $5",
                    )
                    .bind(becomes.id)
                    .bind(&becomes.secret)
                    .bind(&becomes.previous_secret)
                    .bind(&was.secret)
                    .bind(&was.previous_secret)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
                tx.commit().await?;
                Ok(count)
            }
        }
    };
}
pub(crate) use impl_change_store;
