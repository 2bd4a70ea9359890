//! The cursor guarantee under concurrent writers, and durability across `kill -9`.

use crate::common;

use std::collections::HashSet;

use crate::common::{Refusal, Server, Swarm, assert_cursor_never_skips, event_ids, resource_log};

/// Eight publishers and one reader following `next` at the same time: the reader sees every
/// acknowledged event exactly once, and each publisher's events in the order they were acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_following_next_never_skips_an_event_of_concurrent_writers() {
    let server = Server::start();
    let seen = assert_cursor_never_skips(&[&server], &server.ttd(), 8, 150, 7).await;
    eprintln!(
        "8 writers + cursor reader: read {} events once each",
        seen.len()
    );
}

/// Every acknowledged event survives `kill -9` of the server in the middle of a publish load, and
/// reads back exactly once, with a gap-free cursor walk.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_events_survive_kill_9() {
    let mut server = Server::start();
    let token = server.ttd();
    let mut acknowledged: HashSet<String> = HashSet::new();

    for cycle in 0..3 {
        // Bounded: the server is killed well before this many publishes.
        let clients = Swarm::start(
            &[&server],
            &token,
            8,
            100_000,
            &format!("c{cycle}-"),
            |_, _| Refusal::Stop,
        );
        // Let the load run, then pull the plug without warning.
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        server.kill9();
        acknowledged.extend(common::acknowledged(&clients.join().await));
        server.restart();
    }
    assert!(
        acknowledged.len() > 50,
        "the load was too small to mean anything: {}",
        acknowledged.len()
    );

    let ids = event_ids(&resource_log(&server, &token).await);
    let unique: HashSet<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(unique.len(), ids.len(), "an event was stored twice");
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|id| !unique.contains(id.as_str()))
        .collect();
    eprintln!(
        "kill -9 × 3 (SQLite, 8 writers): acknowledged {}, found {}, lost {}, duplicated {}",
        acknowledged.len(),
        ids.len(),
        lost.len(),
        ids.len() - unique.len()
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged events were lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );
}
