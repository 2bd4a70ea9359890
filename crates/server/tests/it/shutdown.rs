//! Graceful shutdown with webhook deliveries in flight: each one either completes before the
//! process exits or is sent again after the restart; no event is left undelivered.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::common::{Receiver, Reply, Server, eventually, generic_event, publish_ok, subscribe_to};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_completes_or_releases_deliveries_in_flight() {
    const EVENTS: usize = 20;
    // Answers handshakes at once and events after 300 ms (one at a time per subscription), so
    // that SIGTERM finds some in flight.
    let receiver = Receiver::start().await;
    receiver.script_deliveries(|_| Reply::ok().delay(Duration::from_millis(300)));
    // Event id → how many times it was answered 200 (a delivery whose sender went away during the
    // 300 ms was not answered).
    let accepted = || {
        let mut accepted: HashMap<String, usize> = HashMap::new();
        for hit in receiver.deliveries_on("/slow") {
            if hit.answered && hit.status == 200 {
                *accepted.entry(hit.event_id().to_owned()).or_default() += 1;
            }
        }
        accepted
    };

    let mut server = Server::start_delivering(&[
        "--push-concurrency",
        "4",
        "--webhook-timeout",
        "5",
        "--retry-schedule",
        "200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms",
    ]);
    let token = server.ttd();
    subscribe_to(&server, &token, &receiver.url("/slow")).await;

    let ids: HashSet<String> = (0..EVENTS).map(|i| format!("term-{i}")).collect();
    for id in &ids {
        publish_ok(&server, &token, &generic_event(id)).await;
    }
    let in_flight = eventually(
        "a delivery in flight to test with",
        Duration::from_secs(5),
        async || match receiver.deliveries_in_flight() {
            0 => Err("none".to_owned()),
            n => Ok(n),
        },
    )
    .await;
    let status = server.terminate();
    assert!(
        status.success(),
        "exit status {status}; log: {}",
        server.log()
    );
    let before = accepted().len();

    server.restart();
    let delivered: HashSet<String> = eventually(
        "every event delivered after the restart",
        Duration::from_secs(60),
        async || {
            let delivered: HashSet<String> = accepted().into_keys().collect();
            if delivered == ids {
                Ok(delivered)
            } else {
                Err(format!(
                    "undelivered: {:?}; log: {}",
                    ids.difference(&delivered).collect::<Vec<_>>(),
                    server.log()
                ))
            }
        },
    )
    .await;
    let twice = accepted().values().filter(|n| **n > 1).count();
    eprintln!(
        "SIGTERM with {in_flight} deliveries in flight: {before} of {EVENTS} events delivered \
         before the exit, {} after the restart, {} missing, {twice} delivered twice \
         (at least once is the promise)",
        delivered.len(),
        ids.difference(&delivered).count()
    );
    assert_eq!(
        delivered,
        ids,
        "undelivered after the restart; log: {}",
        server.log()
    );
}
