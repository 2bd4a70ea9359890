//! Throw-away PostgreSQL databases for tests (feature `testing`). Outside CI a missing server skips
//! the PostgreSQL tests with a loud message; with `CI=true` it fails them.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::{Connection, PgConnection};

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
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("CI=true but PostgreSQL is not reachable at {admin}: {e}");
                }
                eprintln!(
                    "\n!!!!!!!! SKIPPING a PostgreSQL test: cannot reach {admin} ({e}).\n\
                     !!!!!!!! Start PostgreSQL or set HENDELSE_TEST_PG; in CI this is a failure.\n"
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
