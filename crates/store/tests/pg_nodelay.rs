//! PostgreSQL connections over TCP have Nagle's algorithm off and a bound on unanswered data
//! (see `hendelse_store::nodelay`).
//! Alone in its test binary, so that the only sockets to the database are this store's.

use std::str::FromStr;

use hendelse_store::postgres::PgStore;
use hendelse_store::testing::TestDatabase;
use hendelse_store::{EventStore, nodelay};
use sqlx::postgres::PgConnectOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_to_postgres_over_tcp_has_nodelay() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let options = PgConnectOptions::from_str(&db.url).expect("test database URL");
    assert!(
        options.get_socket().is_none(),
        "the test database is reached over TCP"
    );
    let port = options.get_port();
    let store = PgStore::connect(&db.url).await.expect("connect");
    // Several at once, so that the pool opens more than one connection.
    let (a, b, c, d) = tokio::join!(store.ping(), store.ping(), store.ping(), store.ping());
    for ping in [a, b, c, d] {
        ping.expect("ping");
    }
    let states = nodelay::states_of_sockets_to_port(port);
    assert!(!states.is_empty(), "no socket to port {port} found");
    assert!(
        states.iter().all(|(nodelay, _)| *nodelay),
        "sockets without TCP_NODELAY: {states:?}"
    );
    // A partition fails a query within this bound instead of TCP's quarter of an hour.
    assert!(
        states
            .iter()
            .all(|(_, timeout)| *timeout == Some(nodelay::UNANSWERED)),
        "sockets without TCP_USER_TIMEOUT: {states:?}"
    );
    drop(store);
    db.drop_database().await;
}
