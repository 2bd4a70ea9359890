//! The `%` wildcard translation: `Pattern::to_like` run by SQL (`LIKE … ESCAPE '\'` as the store
//! runs it) must agree with `Pattern::matches` (what the live stream and push filters use) for
//! generated patterns and texts, `_`, `\` and `%` included.

use hendelse_model::Pattern;
use proptest::prelude::*;
use sqlx::{Connection, SqliteConnection};

/// ASCII only: SQLite's `LIKE` folds ASCII case alone, as the store documents.
fn pattern() -> impl Strategy<Value = String> {
    "[aAbB_%\\\\./:]{0,8}"
}

fn text() -> impl Strategy<Value = String> {
    "[aAbB_%\\\\./:]{0,10}"
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn sqlite_like_agrees_with_matches(pairs in proptest::collection::vec((pattern(), text()), 50)) {
        let rt = runtime();
        let disagreements = rt.block_on(async {
            let mut conn = SqliteConnection::connect("sqlite::memory:").await.expect("sqlite");
            let mut out = Vec::new();
            for (p, t) in &pairs {
                let pattern = Pattern::new(p.clone());
                let sql: bool = sqlx::query_scalar("SELECT ? LIKE ? ESCAPE '\\'")
                    .bind(t)
                    .bind(pattern.to_like())
                    .fetch_one(&mut conn)
                    .await
                    .expect("like");
                if sql != pattern.matches(t) {
                    out.push((p.clone(), t.clone(), sql));
                }
            }
            out
        });
        prop_assert!(disagreements.is_empty(), "(pattern, text, sql): {:?}", disagreements);
    }
}

/// The same on PostgreSQL's `ILIKE`, for a fixed number of generated pairs (skipped outside CI
/// when no PostgreSQL is reachable).
#[test]
fn postgres_ilike_agrees_with_matches() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let rt = runtime();
    rt.block_on(async {
        let Some(db) = hendelse_store::testing::TestDatabase::create().await else {
            return;
        };
        let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("pg");
        let mut runner = TestRunner::deterministic();
        let strategy = (pattern(), text());
        let mut checked = 0;
        for _ in 0..2000 {
            let (p, t) = strategy.new_tree(&mut runner).expect("tree").current();
            let pattern = Pattern::new(p.clone());
            let sql: bool = sqlx::query_scalar("SELECT $1 ILIKE $2 ESCAPE '\\'")
                .bind(&t)
                .bind(pattern.to_like())
                .fetch_one(&mut conn)
                .await
                .expect("ilike");
            assert_eq!(sql, pattern.matches(&t), "pattern {p:?}, text {t:?}");
            checked += 1;
        }
        assert_eq!(checked, 2000);
        drop(conn);
        db.drop_database().await;
    });
}
