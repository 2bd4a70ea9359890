//! The PostgreSQL backend, for several `hendelse serve` nodes on one database. Each node's writer
//! group-commits its publishes; the writers of all nodes take turns through a row lock held until
//! commit, which is what makes sequence numbers visible in commit order.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use crate::sql::{Dialect, push_filters};
use crate::{
    AppendReceipt, EventQuery, EventStore, NewEvent, StoreError, StoredEvent, micros_to_time,
};

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "events",
        include_str!("../migrations/postgres/0001_events.sql"),
    ),
    (
        2,
        "push",
        include_str!("../migrations/postgres/0002_push.sql"),
    ),
    (
        3,
        "dialogs",
        include_str!("../migrations/postgres/0003_dialogs.sql"),
    ),
    (
        4,
        "deliveries_due",
        include_str!("../migrations/postgres/0004_deliveries_due.sql"),
    ),
    (
        5,
        "write_probe",
        include_str!("../migrations/postgres/0005_write_probe.sql"),
    ),
    (
        6,
        "subscription_generation",
        include_str!("../migrations/postgres/0006_subscription_generation.sql"),
    ),
    (
        7,
        "narrow_deliveries",
        include_str!("../migrations/postgres/0007_narrow_deliveries.sql"),
    ),
    (
        8,
        "batches",
        include_str!("../migrations/postgres/0008_batches.sql"),
    ),
    (
        9,
        "replays",
        include_str!("../migrations/postgres/0009_replays.sql"),
    ),
    (
        10,
        "endpoint_health",
        include_str!("../migrations/postgres/0010_endpoint_health.sql"),
    ),
    (
        11,
        "secret_rotation",
        include_str!("../migrations/postgres/0011_secret_rotation.sql"),
    ),
    (
        12,
        "settled_deliveries",
        include_str!("../migrations/postgres/0012_settled_deliveries.sql"),
    ),
    (
        13,
        "rate_limits",
        include_str!("../migrations/postgres/0013_rate_limits.sql"),
    ),
    (
        14,
        "traceparent",
        include_str!("../migrations/postgres/0014_traceparent.sql"),
    ),
];

/// Each connection's session settings (see `connect`); TCP ones are ignored on a Unix socket.
const SESSION_SETTINGS: &str = "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 1; \
     SET tcp_keepalives_count = 5; SET tcp_user_timeout = 10000; \
     SET idle_in_transaction_session_timeout = 15000";

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://…`) and applies pending migrations; several nodes may do so
    /// at once (the migrator takes an advisory lock).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?.application_name("hendelse");
        let tcp_port = options.get_socket().is_none().then(|| options.get_port());
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if let Some(port) = tcp_port {
                        crate::nodelay::on_sockets_to_port(port);
                    }
                    // The server's side of the same bound: a backend whose client vanished (a
                    // partition) is ended within seconds, and with it the locks its transaction
                    // held (the log's tip row), instead of after the kernel's two hours of
                    // keepalive silence. Sent as SET, not startup options, so that it also passes
                    // through PgBouncer, which drops those.
                    sqlx::raw_sql(SESSION_SETTINGS).execute(conn).await?;
                    Ok(())
                })
            })
            // A connection that comes back with a transaction open (a failed commit) is closed, not
            // handed to the next request; PostgreSQL rolls back what the session held.
            .after_release(|conn, _| {
                Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) })
            })
            .connect_with(options)
            .await?;
        crate::sql::migrator(MIGRATIONS).run(&pool).await?;
        Ok(PgStore { pool })
    }

    /// A write transaction. sqlx tracks PostgreSQL's transaction state from the server's own
    /// answers (`ReadyForQuery`), so a plain `BEGIN` cannot be mistaken for a savepoint here.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
        self.pool.begin().await
    }

    /// A write transaction whose commit is not waited for on disk (`synchronous_commit = off`
    /// for this transaction only), for the push queue's bookkeeping that may be lost to a crash
    /// of the database (see `push::backend`). PostgreSQL writes its WAL in order, so a later
    /// synced commit makes every earlier one durable too: what is lost is a suffix, never a hole.
    pub(crate) async fn begin_write_unsynced(
        &self,
    ) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
        self.pool
            .begin_with("BEGIN; SET LOCAL synchronous_commit = off")
            .await
    }

    pub async fn migrate(url: &str) -> Result<(), StoreError> {
        let store = Self::connect(url).await?;
        store.pool.close().await;
        Ok(())
    }

    /// `EXPLAIN` of the page query, for tests that prove every shape uses an index.
    pub async fn explain(&self, query: &EventQuery) -> Result<Vec<String>, StoreError> {
        let mut qb = crate::sql::select::<Postgres>(Dialect::Postgres, "EXPLAIN ", query);
        let rows = qb.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(StoreError::from))
            .collect()
    }
}

crate::retention::impl_retention!(PgStore, Postgres);

crate::push::impl_replay_store!(PgStore, Postgres, read: pool);
crate::push::impl_health_store!(PgStore, Postgres, read: pool);
crate::push::impl_change_store!(PgStore, Postgres, write: pool);
crate::push::impl_history_store!(PgStore, Postgres, read: pool);
crate::push::impl_push_store!(
    PgStore,
    Postgres,
    read: pool,
    write: pool,
    tip: "SELECT seq FROM event_tip WHERE singleton",
    skip_locked: "FOR UPDATE OF d SKIP LOCKED",
    lock_rows: "FOR UPDATE"
);

crate::dialog::impl_dialog_store!(
    PgStore,
    Postgres,
    read: pool,
    write: pool,
    dialect: crate::sql::Dialect::Postgres
);

#[async_trait]
impl EventStore for PgStore {
    async fn append(&self, events: &[NewEvent]) -> Result<AppendReceipt, StoreError> {
        let mut tx = self.begin_write().await?;
        let tip = sqlx::query("SELECT seq, registered FROM event_tip WHERE singleton FOR UPDATE")
            .fetch_one(&mut *tx)
            .await?;
        let tip_seq: i64 = tip.try_get(0)?;
        let tip_registered: i64 = tip.try_get(1)?;
        if events.is_empty() {
            return Ok(AppendReceipt {
                inserted: 0,
                last_seq: tip_seq,
            });
        }
        let registered = Utc::now().timestamp_micros().max(tip_registered);
        let n = i64::try_from(events.len()).unwrap_or(i64::MAX);
        // One statement for the whole batch: every column as an array, unnested into rows.
        let inserted: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO events (seq, id, source, type, subject_key, alternative_subject, resource, registered, body, traceparent) \
             SELECT $1 + t.ord, t.id, t.source, t.type, t.subject_key, t.alternative_subject, t.resource, $2, t.body, t.traceparent \
             FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[]) \
                  WITH ORDINALITY AS t(id, source, type, subject_key, alternative_subject, resource, body, traceparent, ord) \
             ORDER BY t.ord \
             ON CONFLICT (id, source) DO NOTHING RETURNING seq",
        )
        .bind(tip_seq)
        .bind(registered)
        .bind(events.iter().map(|e| e.id.clone()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.source.clone()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.event_type.clone()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.subject_key.clone()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.alternative_subject.clone()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.resource.clone()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.body.clone()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.traceparent.clone()).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?;
        let last_seq = tip_seq + n;
        if let (Some(first), Some(last)) = (inserted.iter().min(), inserted.iter().max()) {
            sqlx::query(
                "INSERT INTO commits (first_seq, last_seq, registered) VALUES ($1, $2, $3)",
            )
            .bind(first)
            .bind(last)
            .bind(registered)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE event_tip SET seq = $1, registered = $2 WHERE singleton")
            .bind(last_seq)
            .bind(registered)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(AppendReceipt {
            inserted: inserted.len() as u64,
            last_seq,
        })
    }

    async fn query(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        if query.visibility.is_nothing() || query.limit == 0 {
            return Ok(Vec::new());
        }
        let mut qb = crate::sql::select::<Postgres>(Dialect::Postgres, "", query);
        let rows = qb.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(StoredEvent {
                    seq: r.try_get(0)?,
                    id: r.try_get(1)?,
                    registered: micros_to_time(r.try_get(2)?),
                    body: r.try_get(3)?,
                })
            })
            .collect()
    }

    async fn position_of(&self, id: &str, query: &EventQuery) -> Result<Option<i64>, StoreError> {
        let mut qb = QueryBuilder::new("SELECT min(seq) FROM events WHERE id = ");
        qb.push_bind(id.to_owned());
        if !push_filters(&mut qb, query, Dialect::Postgres) {
            return Ok(None);
        }
        Ok(qb.build().fetch_one(&self.pool).await?.try_get(0)?)
    }

    async fn delete_registered_before(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let deleted = Self::delete_through(&mut tx, cutoff.timestamp_micros()).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn last_seq(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT seq FROM event_tip WHERE singleton")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn probe_write(&self) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO write_probe (id, at) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET at = excluded.at",
        )
        .bind(Utc::now().timestamp_micros())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
