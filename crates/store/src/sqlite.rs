//! The embedded default backend: one SQLite file in WAL mode with `synchronous = FULL`, so that a
//! commit is on disk before it is acknowledged. Writes go through one connection (SQLite has one
//! writer anyway), reads through a small pool that WAL lets run beside the writer.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use tokio::sync::Mutex;

use crate::sql::{Dialect, push_filters};
use crate::{
    AppendReceipt, EventQuery, EventStore, NewEvent, StoreError, StoredEvent, micros_to_time,
};

/// SQLite allows 32,766 bound parameters per statement; 9 per event row.
const ROWS_PER_INSERT: usize = 500;

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "events",
        include_str!("../migrations/sqlite/0001_events.sql"),
    ),
    (
        2,
        "push",
        include_str!("../migrations/sqlite/0002_push.sql"),
    ),
    (
        3,
        "dialogs",
        include_str!("../migrations/sqlite/0003_dialogs.sql"),
    ),
    (
        4,
        "resource_filters",
        include_str!("../migrations/sqlite/0004_resource_filters.sql"),
    ),
    (
        5,
        "deliveries_due",
        include_str!("../migrations/sqlite/0005_deliveries_due.sql"),
    ),
    (
        6,
        "write_probe",
        include_str!("../migrations/sqlite/0006_write_probe.sql"),
    ),
    (
        7,
        "subscription_generation",
        include_str!("../migrations/sqlite/0007_subscription_generation.sql"),
    ),
    (
        8,
        "narrow_deliveries",
        include_str!("../migrations/sqlite/0008_narrow_deliveries.sql"),
    ),
    (
        9,
        "batches",
        include_str!("../migrations/sqlite/0009_batches.sql"),
    ),
    (
        10,
        "replays",
        include_str!("../migrations/sqlite/0010_replays.sql"),
    ),
    (
        11,
        "endpoint_health",
        include_str!("../migrations/sqlite/0011_endpoint_health.sql"),
    ),
    (
        12,
        "secret_rotation",
        include_str!("../migrations/sqlite/0012_secret_rotation.sql"),
    ),
    (
        13,
        "settled_deliveries",
        include_str!("../migrations/sqlite/0013_settled_deliveries.sql"),
    ),
    (
        14,
        "rate_limits",
        include_str!("../migrations/sqlite/0014_rate_limits.sql"),
    ),
    (
        15,
        "traceparent",
        include_str!("../migrations/sqlite/0015_traceparent.sql"),
    ),
];

pub struct SqliteStore {
    writer: SqlitePool,
    readers: SqlitePool,
    /// Highest seq and registration time committed so far; only the writer changes them.
    tip: Arc<Mutex<Tip>>,
}

#[derive(Debug, Clone, Copy)]
struct Tip {
    seq: i64,
    registered: i64,
}

impl SqliteStore {
    /// Opens (creating if needed) `events.db` in `data_dir` and applies pending migrations.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Open(format!(
                "cannot create data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        Self::open_file(&data_dir.join("events.db")).await
    }

    pub async fn open_file(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .after_release(|conn, _| Box::pin(async move { Ok(left_clean(conn).await) }))
            .connect_with(options.clone())
            .await?;
        crate::sql::migrator(MIGRATIONS).run(&writer).await?;
        // One process owns an SQLite file: leases of a previous run (one that was killed) are void.
        sqlx::query("UPDATE deliveries SET lease_owner = NULL, lease_until = NULL WHERE lease_owner IS NOT NULL")
            .execute(&writer)
            .await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        let row = sqlx::query(
            "SELECT (SELECT coalesce(max(seq), 0) FROM events), \
                    (SELECT coalesce(max(registered), 0) FROM commits)",
        )
        .fetch_one(&writer)
        .await?;
        let tip = Tip {
            seq: row.try_get(0)?,
            registered: row.try_get(1)?,
        };
        Ok(SqliteStore {
            writer,
            readers,
            tip: Arc::new(Mutex::new(tip)),
        })
    }

    /// Opens a write transaction that can only be a real, outermost one.
    ///
    /// Why not `Pool::begin`: sqlx counts transaction depth itself, and after a failed `COMMIT`
    /// (`SQLITE_FULL` on a full disk) its count stays at 1 while SQLite may already have rolled
    /// back or may still hold the transaction open. Its next `begin` then issues
    /// `SAVEPOINT`, and the matching "commit" is `RELEASE SAVEPOINT`, which inside a transaction
    /// still open on the connection commits nothing — yet returns OK, so publishes were
    /// acknowledged that were never written and vanished with the connection (issue 13: 374–755
    /// of about 16,000 lost per run). A custom `BEGIN IMMEDIATE` is refused by sqlx at depth > 0
    /// and by SQLite inside an open transaction, so an acknowledged commit is always a real
    /// `COMMIT`; and [`left_clean`] retires any connection that comes back from a failed write,
    /// so that the refusal cannot repeat for ever either.
    ///
    /// Its commit is synced (`synchronous = FULL`, set again each time because
    /// [`Self::begin_write_unsynced`] lowers it on the same connection).
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, Sqlite>, sqlx::Error> {
        self.writer
            .begin_with("PRAGMA synchronous = FULL; BEGIN IMMEDIATE")
            .await
    }

    /// A write transaction whose commit is not synced (`synchronous = NORMAL`: in WAL mode the
    /// commit reaches the OS, which a crash of the process cannot lose, but not the disk), for the
    /// push queue's bookkeeping that may be lost to a power cut (see `push::backend`). The next
    /// synced commit syncs the WAL and with it every frame before it, so what is lost is always
    /// a suffix, never a hole.
    pub(crate) async fn begin_write_unsynced(
        &self,
    ) -> Result<sqlx::Transaction<'static, Sqlite>, sqlx::Error> {
        self.writer
            .begin_with("PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE")
            .await
    }

    /// Applies pending migrations without keeping the store open.
    pub async fn migrate(data_dir: &Path) -> Result<(), StoreError> {
        let store = Self::open(data_dir).await?;
        store.writer.close().await;
        store.readers.close().await;
        Ok(())
    }

    /// The query plan SQLite picks for `query`, for tests that prove every shape uses an index.
    pub async fn explain(&self, query: &EventQuery) -> Result<Vec<String>, StoreError> {
        let mut qb = crate::sql::select::<Sqlite>(Dialect::Sqlite, "EXPLAIN QUERY PLAN ", query);
        let rows = qb.build().fetch_all(&self.readers).await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(3).map_err(StoreError::from))
            .collect()
    }
}

crate::retention::impl_retention!(SqliteStore, Sqlite);

crate::push::impl_replay_store!(SqliteStore, Sqlite, read: readers);
crate::push::impl_health_store!(SqliteStore, Sqlite, read: readers);
crate::push::impl_change_store!(SqliteStore, Sqlite, write: writer);
crate::push::impl_history_store!(SqliteStore, Sqlite, read: readers);
crate::push::impl_push_store!(
    SqliteStore,
    Sqlite,
    read: readers,
    write: writer,
    tip: "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0)",
    skip_locked: "",
    lock_rows: ""
);

crate::dialog::impl_dialog_store!(
    SqliteStore,
    Sqlite,
    read: readers,
    write: writer,
    dialect: crate::sql::Dialect::Sqlite
);

#[async_trait]
impl EventStore for SqliteStore {
    async fn append(&self, events: &[NewEvent]) -> Result<AppendReceipt, StoreError> {
        let mut tip = self.tip.lock().await;
        let registered = Utc::now().timestamp_micros().max(tip.registered);
        let mut tx = self.begin_write().await?;
        let mut inserted = 0;
        for chunk in events.chunks(ROWS_PER_INSERT) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO events (id, source, type, subject_key, alternative_subject, resource, registered, body, traceparent) ",
            );
            qb.push_values(chunk, |mut row, e| {
                row.push_bind(e.id.clone())
                    .push_bind(e.source.clone())
                    .push_bind(e.event_type.clone())
                    .push_bind(e.subject_key.clone())
                    .push_bind(e.alternative_subject.clone())
                    .push_bind(e.resource.clone())
                    .push_bind(registered)
                    .push_bind(e.body.clone())
                    .push_bind(e.traceparent.clone());
            });
            qb.push(" ON CONFLICT (id, source) DO NOTHING");
            // Duplicates of stored events are not counted.
            inserted += qb.build().execute(&mut *tx).await?.rows_affected();
        }
        // The commit's row, from the positions just taken, in the same statement that finds
        // them: each statement is a round trip to the connection's thread.
        let last: Option<i64> = sqlx::query_scalar(
            "INSERT INTO commits (first_seq, last_seq, registered) \
             SELECT min(seq), max(seq), ? FROM events WHERE seq > ? HAVING count(*) > 0 \
             RETURNING last_seq",
        )
        .bind(registered)
        .bind(tip.seq)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        if let Some(last) = last {
            *tip = Tip {
                seq: last,
                registered,
            };
        }
        Ok(AppendReceipt {
            inserted,
            last_seq: tip.seq,
        })
    }

    async fn query(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        if query.visibility.is_nothing() || query.limit == 0 {
            return Ok(Vec::new());
        }
        let mut qb = crate::sql::select::<Sqlite>(Dialect::Sqlite, "", query);
        let rows = qb.build().fetch_all(&self.readers).await?;
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
        // Without statistics SQLite may plan this on the query's resource index and walk the
        // whole resource; the (id, source) index finds the candidates directly.
        let mut qb = QueryBuilder::new(
            "SELECT min(seq) FROM events INDEXED BY events_id_source WHERE id = ",
        );
        qb.push_bind(id.to_owned());
        if !push_filters(&mut qb, query, Dialect::Sqlite) {
            return Ok(None);
        }
        Ok(qb.build().fetch_one(&self.readers).await?.try_get(0)?)
    }

    async fn delete_registered_before(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let _tip = self.tip.lock().await;
        let mut tx = self.begin_write().await?;
        let deleted = Self::delete_through(&mut tx, cutoff.timestamp_micros()).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn last_seq(&self) -> Result<i64, StoreError> {
        Ok(self.tip.lock().await.seq)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.readers).await?;
        Ok(())
    }

    async fn probe_write(&self) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO write_probe (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at")
            .bind(Utc::now().timestamp_micros())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    fn writer_wants_own_thread(&self) -> bool {
        true
    }
}

/// Whether a write connection coming back to the pool may be used again: only when neither sqlx
/// nor SQLite thinks a transaction is open on it. A connection returned by a failed write (its
/// transaction dropped, its rollback not yet run or failed) is closed instead, and closing rolls
/// back whatever it still held; the pool opens a fresh one for the next write.
async fn left_clean(conn: &mut sqlx::SqliteConnection) -> bool {
    use sqlx::Connection;
    if conn.is_in_transaction() {
        tracing::warn!("closing the write connection after a failed transaction");
        return false;
    }
    let Ok(mut handle) = conn.lock_handle().await else {
        return false;
    };
    // SAFETY: the locked handle keeps the worker thread off the connection while we call, and
    // sqlite3_get_autocommit only reads a flag of the open database handle.
    let autocommit =
        unsafe { libsqlite3_sys::sqlite3_get_autocommit(handle.as_raw_handle().as_ptr()) };
    if autocommit == 0 {
        tracing::warn!("closing the write connection: SQLite left a transaction open on it");
    }
    autocommit != 0
}
