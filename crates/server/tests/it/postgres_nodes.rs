//! Several `hendelse serve` nodes on one PostgreSQL database, and the embedded store's and
//! PostgreSQL's retention, through HTTP and the CLI.

use std::process::Command;
use std::time::Duration;

use crate::common::{
    BIN, Server, assert_cursor_never_skips, eventually, generic_event, get, hendelse_ok, page_ids,
    publish_ok,
};
use hendelse_store::testing::TestDatabase;

/// Two nodes on one PostgreSQL database (sharing a data directory, so a signing key).
fn two_nodes(db: &TestDatabase) -> (Server, Server) {
    let a = Server::start_with(&["--database-url", &db.url]);
    let b = Server::start_beside(&a, &["--database-url", &db.url]);
    (a, b)
}

/// Four publishers spread over two nodes and one reader that follows `next` alternately on either
/// node: the reader sees every acknowledged event exactly once and each publisher's in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_one_log_and_the_cursor_never_skips() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let (a, b) = two_nodes(&db);
    assert_cursor_never_skips(&[&a, &b], &a.ttd(), 4, 150, 9).await;
    drop((a, b));
    db.drop_database().await;
}

/// No hiding window: an event acknowledged by one node is readable on the other at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_event_is_readable_on_every_node_at_once() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let (a, b) = two_nodes(&db);
    let token = a.ttd();
    let url = |node: &Server| node.log_url("");
    for (i, (writer, reader)) in [(&a, &b), (&b, &a), (&a, &a)].into_iter().enumerate() {
        let id = format!("visible-{i}");
        publish_ok(writer, &token, &generic_event(&id)).await;
        let (status, _, body) = get(&url(reader), &token).await;
        assert_eq!(status, 200);
        let ids = page_ids(&body);
        assert_eq!(ids.last(), Some(&id), "{ids:?}");
        assert_eq!(ids.len(), i + 1);
    }
    // The same event through the other node is still one event.
    publish_ok(&b, &token, &generic_event("visible-0")).await;
    let (_, _, body) = get(&url(&a), &token).await;
    assert_eq!(body.as_array().expect("array").len(), 3);
    drop((a, b));
    db.drop_database().await;
}

/// `hendelse migrate` creates the schema and can run again; a bad URL is a one-line error.
#[tokio::test]
async fn migrate_is_idempotent_and_fails_clearly() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    for _ in 0..2 {
        let out = hendelse_ok(&["migrate", "--database-url", &db.url]);
        assert!(out.contains("up to date"), "{out}");
    }
    db.drop_database().await;

    for (url, says) in [
        (
            "mysql://root@127.0.0.1/x",
            "unsupported database URL scheme",
        ),
        (
            "postgres://nobody:hunter2@127.0.0.1:1/none",
            "opening the store",
        ),
    ] {
        let out = Command::new(BIN)
            .args(["migrate", "--database-url", url])
            .output()
            .expect("run migrate");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(!stderr.contains("hunter2"), "the password leaked: {stderr}");
    }
}

/// Events older than the retention age disappear in the background, on both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_old_events_on_both_backends() {
    let db = TestDatabase::create().await;
    let mut backends: Vec<Vec<String>> = vec![vec![]];
    if let Some(db) = &db {
        backends.push(vec!["--database-url".into(), db.url.clone()]);
    }
    for extra in backends {
        // About four seconds of retention, swept every second.
        let mut args = vec!["--retention-days", "0.00005", "--retention-interval", "1"];
        args.extend(extra.iter().map(String::as_str));
        let server = Server::start_with(&args);
        let token = server.ttd();
        let url = server.log_url("");
        publish_ok(&server, &token, &generic_event("short-lived")).await;
        let (_, _, body) = get(&url, &token).await;
        assert_eq!(body.as_array().expect("array").len(), 1, "{extra:?}");
        eventually(
            &format!("retention to remove the event ({extra:?})"),
            Duration::from_secs(30),
            async || {
                let (status, _, body) = get(&url, &token).await;
                assert_eq!(status, 200);
                if body.as_array().expect("array").is_empty() {
                    Ok(())
                } else {
                    Err(format!("{body}; log: {}", server.log()))
                }
            },
        )
        .await;
    }
    if let Some(db) = db {
        db.drop_database().await;
    }
}
