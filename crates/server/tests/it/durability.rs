//! The cursor guarantee under concurrent writers, and durability across `kill -9`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::common::{RESOURCE, Server, client, event_ids, follow, generic_event, get, publish};
use tokio::sync::Mutex;

/// Eight publishers and one reader following `next` at the same time: the reader sees every
/// acknowledged event exactly once, and each publisher's events in the order they were acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_following_next_never_skips_an_event_of_concurrent_writers() {
    const PUBLISHERS: usize = 8;
    const PER_PUBLISHER: usize = 150;
    let server = Arc::new(Server::start());
    let token = Arc::new(server.ttd());
    let acknowledged = Arc::new(Mutex::new(HashSet::new()));

    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let (server, token, acknowledged) = (server.clone(), token.clone(), acknowledged.clone());
        publishers.push(tokio::spawn(async move {
            for i in 0..PER_PUBLISHER {
                let id = format!("p{p}-{i:04}");
                let response = publish(&server, &token, &generic_event(&id)).await;
                assert_eq!(response.status(), 200, "publish {id}");
                acknowledged.lock().await.insert(id);
            }
        }));
    }

    let mut url = server.at(&format!(
        "/events/api/v1/events?resource={RESOURCE}&after=0&size=7"
    ));
    let mut seen: Vec<String> = Vec::new();
    loop {
        let all_done = publishers.iter().all(|p| p.is_finished());
        let (status, next, body) = get(&url, &token).await;
        assert_eq!(status, 200);
        let page = body.as_array().expect("array");
        seen.extend(
            page.iter()
                .map(|e| e["id"].as_str().expect("id").to_owned()),
        );
        url = next.expect("next");
        if page.is_empty() && all_done {
            break;
        }
    }
    for p in publishers {
        p.await.expect("publisher");
    }

    let unique: HashSet<&String> = seen.iter().collect();
    eprintln!(
        "8 writers + cursor reader: read {}, distinct {}",
        seen.len(),
        unique.len()
    );
    assert_eq!(unique.len(), seen.len(), "the reader saw an event twice");
    let acknowledged = acknowledged.lock().await;
    assert_eq!(acknowledged.len(), PUBLISHERS * PER_PUBLISHER);
    let missing: Vec<_> = acknowledged
        .iter()
        .filter(|id| !unique.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "the reader skipped {} events, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    // Each publisher waited for every acknowledgement, so its events must read in its order.
    let mut last: HashMap<&str, &str> = HashMap::new();
    for id in &seen {
        let (publisher, n) = id.split_once('-').expect("id shape");
        if let Some(previous) = last.insert(publisher, n) {
            assert!(previous < n, "{publisher}: {n} read after {previous}");
        }
    }
}

/// Every acknowledged event survives `kill -9` of the server in the middle of a publish load, and
/// reads back exactly once, with a gap-free cursor walk.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_events_survive_kill_9() {
    let mut server = Server::start();
    let token = server.ttd();
    let mut acknowledged: HashSet<String> = HashSet::new();

    for cycle in 0..3 {
        let url = Arc::new(server.url.clone());
        let mut clients = Vec::new();
        for c in 0..8 {
            let (url, token) = (url.clone(), token.clone());
            clients.push(tokio::spawn(async move {
                let http = client();
                let mut acked = Vec::new();
                for i in 0.. {
                    let id = format!("c{cycle}-{c}-{i}");
                    let sent = http
                        .post(format!("{url}/events/api/v1/events"))
                        .bearer_auth(&token)
                        .header("content-type", "application/cloudevents+json")
                        .body(generic_event(&id).to_string())
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 200 => acked.push(id),
                        // The server died under us: this event was not acknowledged.
                        _ => break,
                    }
                }
                acked
            }));
        }
        // Let the load run, then pull the plug without warning.
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        server.kill9();
        for c in clients {
            acknowledged.extend(c.await.expect("client"));
        }
        server.restart();
    }
    assert!(
        acknowledged.len() > 50,
        "the load was too small to mean anything: {}",
        acknowledged.len()
    );

    let (events, _) = follow(
        &server.at(&format!(
            "/events/api/v1/events?resource={RESOURCE}&after=0&size=1000"
        )),
        &token,
    )
    .await;
    let ids = event_ids(&events);
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
