//! Several `hendelse serve` nodes on one PostgreSQL database, and the embedded store's and
//! PostgreSQL's retention, through HTTP and the CLI.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{BIN, RESOURCE, Server, generic_event, get, page_ids, publish};
use hendelse_store::testing::TestDatabase;
use tokio::sync::Mutex;

/// Four publishers spread over two nodes and one reader that follows `next` alternately on either
/// node: the reader sees every acknowledged event exactly once and each publisher's in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_one_log_and_the_cursor_never_skips() {
    const PUBLISHERS: usize = 4;
    const PER_PUBLISHER: usize = 150;
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let a = Server::start_with(&["--database-url", &db.url]);
    let b = Server::start_beside(&a, &["--database-url", &db.url]);
    let nodes = Arc::new([a, b]);
    let token = Arc::new(nodes[0].ttd());
    let acknowledged = Arc::new(Mutex::new(HashSet::new()));

    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let (nodes, token, acknowledged) = (nodes.clone(), token.clone(), acknowledged.clone());
        publishers.push(tokio::spawn(async move {
            let node = &nodes[p % 2];
            for i in 0..PER_PUBLISHER {
                let id = format!("p{p}-{i:04}");
                let response = publish(node, &token, &generic_event(&id)).await;
                assert_eq!(response.status(), 200, "publish {id} on node {}", p % 2);
                acknowledged.lock().await.insert(id);
            }
        }));
    }

    let mut path_and_query = format!("/events/api/v1/events?resource={RESOURCE}&after=0&size=9");
    let mut seen: Vec<String> = Vec::new();
    for round in 0usize.. {
        assert!(round < 100_000, "the reader did not catch up");
        let all_done = publishers.iter().all(|p| p.is_finished());
        let node = &nodes[round % 2];
        let (status, next, body) = get(&node.at(&path_and_query), &token).await;
        assert_eq!(status, 200, "{body}");
        let page = body.as_array().expect("array");
        seen.extend(
            page.iter()
                .map(|e| e["id"].as_str().expect("id").to_owned()),
        );
        let next = next.expect("next");
        let at = next.find("/events/api").expect("next is a URL of this API");
        path_and_query = next[at..].to_owned();
        if page.is_empty() && all_done {
            break;
        }
    }
    for p in publishers {
        p.await.expect("publisher");
    }

    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "the reader saw an event twice");
    let acknowledged = acknowledged.lock().await;
    assert_eq!(acknowledged.len(), PUBLISHERS * PER_PUBLISHER);
    let missing = acknowledged
        .iter()
        .filter(|id| !unique.contains(id))
        .count();
    assert_eq!(missing, 0, "the reader skipped {missing} events");
    let mut last: HashMap<&str, &str> = HashMap::new();
    for id in &seen {
        let (publisher, n) = id.split_once('-').expect("id shape");
        if let Some(previous) = last.insert(publisher, n) {
            assert!(previous < n, "{publisher}: {n} read after {previous}");
        }
    }
    drop(nodes);
    db.drop_database().await;
}

/// No hiding window: an event acknowledged by one node is readable on the other at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_event_is_readable_on_every_node_at_once() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let a = Server::start_with(&["--database-url", &db.url]);
    let b = Server::start_beside(&a, &["--database-url", &db.url]);
    let token = a.ttd();
    let url = |node: &Server| {
        node.at(&format!(
            "/events/api/v1/events?resource={RESOURCE}&after=0"
        ))
    };
    for (i, (writer, reader)) in [(&a, &b), (&b, &a), (&a, &a)].into_iter().enumerate() {
        let id = format!("visible-{i}");
        assert_eq!(
            publish(writer, &token, &generic_event(&id)).await.status(),
            200
        );
        let (status, _, body) = get(&url(reader), &token).await;
        assert_eq!(status, 200);
        let ids = page_ids(&body);
        assert_eq!(ids.last(), Some(&id), "{ids:?}");
        assert_eq!(ids.len(), i + 1);
    }
    // The same event through the other node is still one event.
    assert_eq!(
        publish(&b, &token, &generic_event("visible-0"))
            .await
            .status(),
        200
    );
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
        let out = Command::new(BIN)
            .args(["migrate", "--database-url", &db.url])
            .output()
            .expect("run migrate");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"));
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
        let url = server.at(&format!(
            "/events/api/v1/events?resource={RESOURCE}&after=0"
        ));
        assert_eq!(
            publish(&server, &token, &generic_event("short-lived"))
                .await
                .status(),
            200
        );
        let (_, _, body) = get(&url, &token).await;
        assert_eq!(body.as_array().expect("array").len(), 1, "{extra:?}");
        let mut gone = false;
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (status, _, body) = get(&url, &token).await;
            assert_eq!(status, 200);
            if body.as_array().expect("array").is_empty() {
                gone = true;
                break;
            }
        }
        assert!(
            gone,
            "retention never removed the event ({extra:?}); log: {}",
            server.log()
        );
    }
    if let Some(db) = db {
        db.drop_database().await;
    }
}
