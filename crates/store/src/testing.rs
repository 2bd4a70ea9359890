//! What the test suites of this and other crates share (feature `testing`): throw-away PostgreSQL
//! databases, the rule for tests that cannot run here, a store to inject faults into, and the
//! records the push tests build. Outside CI a missing server skips the PostgreSQL tests with a
//! loud message; with `CI=true` it fails them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};

use crate::push::{NewDelivery, NewSubscription};
use crate::{AppendReceipt, EventQuery, EventStore, NewEvent, StoreError, StoredEvent};

/// Says loudly that `test` is skipped because of `missing`, and carries on. With `CI=true`, where
/// everything the tests need must be there, it panics instead: a skip would hide a broken setup.
pub fn skip_outside_ci(test: &str, missing: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but {test} cannot run: {missing}");
    }
    eprintln!("\n!!!!!!!! SKIPPING {test}: {missing}. In CI this is a failure.\n");
}

/// Where the tests find PostgreSQL; override with `HENDELSE_TEST_PG`.
pub fn admin_url() -> String {
    std::env::var("HENDELSE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database created for one test, dropped by [`TestDatabase::drop_database`].
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestDatabase {
    /// Creates a fresh database, or returns `None` (after saying so loudly) when PostgreSQL is not
    /// reachable outside CI. Panics in CI, where PostgreSQL must be there.
    pub async fn create() -> Option<TestDatabase> {
        let admin = admin_url();
        let mut conn = match PgConnection::connect(&admin).await {
            Ok(c) => c,
            Err(e) => {
                skip_outside_ci(
                    "a PostgreSQL test",
                    &format!(
                        "cannot reach {admin} ({e}); start PostgreSQL or set HENDELSE_TEST_PG"
                    ),
                );
                return None;
            }
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!(
            "hendelse_test_{}_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        Some(TestDatabase {
            url: format!("{base}/{name}"),
            name,
        })
    }

    pub async fn drop_database(&self) {
        if let Ok(mut conn) = PgConnection::connect(&admin_url()).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut conn)
            .await;
        }
    }
}

/// An event store that hands every call to `inner`, running `before_append` first on each
/// append: a test's way to count commits, or to make some of them fail (an `Err`) or panic.
pub struct HookedStore {
    inner: Arc<dyn EventStore>,
    before_append: Box<dyn Fn() -> Result<(), StoreError> + Send + Sync>,
}

impl HookedStore {
    pub fn new(
        inner: Arc<dyn EventStore>,
        before_append: impl Fn() -> Result<(), StoreError> + Send + Sync + 'static,
    ) -> HookedStore {
        HookedStore {
            inner,
            before_append: Box::new(before_append),
        }
    }
}

#[async_trait]
impl EventStore for HookedStore {
    async fn append(&self, events: &[NewEvent]) -> Result<AppendReceipt, StoreError> {
        (self.before_append)()?;
        self.inner.append(events).await
    }
    async fn query(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.query(query).await
    }
    async fn position_of(&self, id: &str, query: &EventQuery) -> Result<Option<i64>, StoreError> {
        self.inner.position_of(id, query).await
    }
    async fn delete_registered_before(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.delete_registered_before(cutoff).await
    }
    async fn last_seq(&self) -> Result<i64, StoreError> {
        self.inner.last_seq().await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn probe_write(&self) -> Result<(), StoreError> {
        self.inner.probe_write().await
    }
}

/// A subscription of the org `ttd` to every event of `resource`, sent to `end_point`; tests set
/// the filters they need on top.
pub fn org_subscription(end_point: &str, resource: &str) -> NewSubscription {
    NewSubscription {
        end_point: end_point.to_owned(),
        resource_filter: resource.to_owned(),
        source_filter: None,
        subject_filter: None,
        alternative_subject_filter: None,
        type_filter: None,
        include_subunits: false,
        consumer: "/org/ttd".into(),
        created_by: "/org/ttd".into(),
        principal: r#"{"kind":"org","org":"ttd","orgNumber":null,"scopes":[]}"#.into(),
        secret: None,
        batching: crate::push::Batching::default(),
        rate_limit: None,
    }
}

/// The validation handshake a new subscription `id` is queued, as the push tests write it.
pub fn handshake(id: i64) -> NewDelivery {
    NewDelivery {
        subscription_id: id,
        event_seq: None,
        event_id: format!("validate-{id}"),
        webhook_id: format!("msg_validate_{id}"),
        body: Some("{}".into()),
        batch: None,
    }
}

/// Runs each named `async fn case(store: Arc<dyn Store>)` of the calling module as two tests, one
/// on a fresh SQLite store and one on a fresh PostgreSQL database (skipped loudly outside CI when
/// no server answers), so that one suite proves the backends behave alike. The caller needs
/// `tempfile` and `tokio` as (dev-)dependencies.
#[macro_export]
macro_rules! both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let dir = tempfile::tempdir().expect("temp dir");
                    let store = $crate::sqlite::SqliteStore::open(dir.path()).await.expect("open sqlite");
                    super::$case(std::sync::Arc::new(store) as std::sync::Arc<dyn $crate::Store>).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(db) = $crate::testing::TestDatabase::create().await else { return };
                    let store = $crate::postgres::PgStore::connect(&db.url).await.expect("open postgres");
                    super::$case(std::sync::Arc::new(store) as std::sync::Arc<dyn $crate::Store>).await;
                    db.drop_database().await;
                }
            )*
        }
    };
}
