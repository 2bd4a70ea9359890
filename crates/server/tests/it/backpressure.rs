//! Back-pressure: a flood of batch publishes while a webhook receiver never answers does not grow
//! the server's memory without bound; publishes are acknowledged or refused with 503 and
//! `Retry-After`, and everything acknowledged is stored.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::{
    EVENTS, Receiver, Reply, Server, client, event_ids, generic_event, resource_log, subscribe_to,
};

/// Resident and peak memory of a process, in KiB, from `/proc` (Linux).
fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_with_a_dead_receiver_keeps_memory_bounded() {
    const CLIENTS: usize = 16;
    const BATCHES: usize = 100;
    const PER_BATCH: usize = 50;
    // Answers handshakes, then never answers an event (until the test ends).
    let receiver = Receiver::start().await;
    receiver.script_deliveries(|_| Reply::hang());

    let server = Arc::new(Server::start_delivering(&[
        "--push-concurrency",
        "4",
        "--webhook-timeout",
        "120",
        "--ingest-queue",
        "64",
    ]));
    let Some(pid) = server.pid() else {
        panic!("the server is not running");
    };
    let token = Arc::new(server.ttd());
    subscribe_to(&server, &token, &receiver.url("/stuck")).await;

    let acknowledged = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let wrong = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut baseline = None;
    for round in 0..2 {
        let batches = if round == 0 { 1 } else { BATCHES };
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let (server, token) = (server.clone(), token.clone());
            let (acknowledged, refused, wrong) =
                (acknowledged.clone(), refused.clone(), wrong.clone());
            tasks.push(tokio::spawn(async move {
                // One connection per client, kept alive, as a real flood would be.
                let http = client();
                for b in 0..batches {
                    let ids: Vec<String> = (0..PER_BATCH)
                        .map(|i| format!("flood-{round}-{c}-{b}-{i}"))
                        .collect();
                    let batch: Vec<_> = ids.iter().map(|id| generic_event(id)).collect();
                    let r = http
                        .post(server.at(EVENTS))
                        .bearer_auth(&*token)
                        .header("content-type", "application/cloudevents-batch+json")
                        .body(serde_json::to_string(&batch).expect("json"))
                        .send()
                        .await
                        .expect("publish");
                    match r.status().as_u16() {
                        200 => acknowledged.lock().expect("lock").extend(ids),
                        503 if r.headers().contains_key("retry-after") => {
                            refused.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        other => wrong.lock().expect("lock").push(other),
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("client");
        }
        if round == 0 {
            baseline = memory(pid);
        }
    }
    let after = memory(pid);
    let wrong = wrong.lock().expect("lock").clone();
    assert!(wrong.is_empty(), "answers other than 200 or 503: {wrong:?}");
    let acknowledged = acknowledged.lock().expect("lock").clone();

    let events = resource_log(&server, &token).await;
    let stored: HashSet<String> = event_ids(&events).into_iter().collect();
    let lost = acknowledged.difference(&stored).count();
    let (Some((rss_before, _)), Some((rss_after, peak))) = (baseline, after) else {
        eprintln!("no /proc here: memory not measured");
        assert_eq!(lost, 0);
        return;
    };
    eprintln!(
        "flood with a dead receiver: {} events acknowledged in batches of {PER_BATCH}, {} batches \
         refused with 503, {} stored, {lost} lost; RSS {} MiB after warm-up, {} MiB after, \
         peak {} MiB",
        acknowledged.len(),
        refused.load(Ordering::SeqCst),
        stored.len(),
        rss_before / 1024,
        rss_after / 1024,
        peak / 1024
    );
    assert_eq!(lost, 0, "acknowledged events were lost");
    assert!(
        acknowledged.len() >= CLIENTS * PER_BATCH * 5,
        "too little got through to mean anything: {}",
        acknowledged.len()
    );
    // 80,000 events of ~300 bytes are ~24 MB of JSON: holding them (or a delivery per event) in
    // memory would show; SQLite's page cache and allocator slack stay well below this.
    assert!(
        rss_after.saturating_sub(rss_before) < 128 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );
}
