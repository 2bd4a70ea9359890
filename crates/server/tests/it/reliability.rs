//! Graceful shutdown, back-pressure and isolation between webhook endpoints, through the binary.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use crate::common::{
    EVENTS, RESOURCE, Receiver, Refusal, Reply, Server, Swarm, acknowledged, client,
    create_subscription, event_ids, eventually, generic_event, header, publish_ok, resource_log,
    subscribe_to, wait_validated,
};
use serde_json::json;

/// SIGTERM under load: every publish is either acknowledged and stored, or refused; the process
/// exits cleanly, and after a restart every acknowledged event is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_commits_or_refuses_every_publish() {
    let mut server = Server::start();
    let token = server.ttd();
    let clients = Swarm::start(&[&server], &token, 8, 100_000, "t", |id, refused| {
        // Refused while stopping: never a 2xx for what was not stored.
        assert!(
            refused.status().is_server_error(),
            "{id}: {}",
            refused.status()
        );
        Refusal::Stop
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = server.terminate();
    assert!(
        status.success(),
        "exit after SIGTERM: {status:?}; log: {}",
        server.log()
    );
    let acknowledged = acknowledged(&clients.join().await);
    assert!(
        acknowledged.len() > 20,
        "too little load: {}",
        acknowledged.len()
    );
    server.restart();
    let events = resource_log(&server, &token).await;
    let stored: HashSet<String> = event_ids(&events).into_iter().collect();
    let lost = acknowledged.difference(&stored).count();
    assert_eq!(lost, 0, "{lost} acknowledged events were lost");
    assert_eq!(stored.len(), events.len(), "an event was stored twice");
}

/// With a one-slot ingest queue and many concurrent publishers, publishes that cannot wait get 503
/// problem details with Retry-After; every acknowledged one is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_ingest_queue_refuses_with_retry_after_and_loses_nothing() {
    let server = Server::start_with(&["--ingest-queue", "1"]);
    let token = server.ttd();
    let publishers = Swarm::start(&[&server], &token, 48, 15, "q", |id, refused| {
        assert_eq!(refused.status(), 503, "{id}: unexpected");
        assert!(refused.headers().contains_key("retry-after"));
        assert_eq!(header(refused, "content-type"), "application/problem+json");
        Refusal::Next
    });
    let published = publishers.join().await;
    assert!(
        published.iter().all(|p| !p.cut_off),
        "a publish got no answer at all"
    );
    let acknowledged = acknowledged(&published);
    eprintln!(
        "ingest queue of 1: {} acknowledged, {} refused with 503",
        acknowledged.len(),
        published.iter().map(|p| p.refused).sum::<usize>()
    );
    let events = resource_log(&server, &token).await;
    let stored: HashSet<String> = event_ids(&events).into_iter().collect();
    assert_eq!(stored, acknowledged, "stored and acknowledged differ");
}

/// An endpoint that hangs takes at most its share of the delivery slots: another subscription's
/// events keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_endpoint_does_not_hold_up_other_subscriptions() {
    // Answers handshakes at once; at /stuck, never answers an event (until the test ends).
    let receiver = Receiver::start().await;
    receiver.script_deliveries(|hit| {
        if hit.path == "/stuck" {
            Reply::hang()
        } else {
            Reply::ok()
        }
    });

    let server = Server::start_delivering(&["--push-concurrency", "4", "--webhook-timeout", "120"]);
    let token = server.ttd();
    for path in ["/stuck", "/fast"] {
        let id = subscribe_to(&server, &token, &receiver.url(path)).await;
        wait_validated(&server, &token, id).await;
    }

    let expected: BTreeSet<String> = (0..20).map(|i| format!("iso-{i}")).collect();
    for id in &expected {
        publish_ok(&server, &token, &generic_event(id)).await;
    }
    eventually(
        "the fast endpoint's events, which must not wait for the stuck one",
        Duration::from_secs(20),
        async || {
            let got = receiver.ids_on("/fast");
            if got == expected {
                Ok(())
            } else {
                Err(format!("{got:?}; log: {}", server.log()))
            }
        },
    )
    .await;
}

/// Tokens and webhook secrets never reach the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_tokens_stay_out_of_the_log() {
    let server = Server::start_delivering(&[]);
    let token = server.ttd();
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let created = create_subscription(
        &server,
        &token,
        &json!({
            "endPoint": "http://127.0.0.1:9/hook?token=query-secret",
            "resourceFilter": RESOURCE,
            "secret": secret
        }),
    )
    .await;
    assert_eq!(created.status, 201);
    assert!(!created.text.contains(secret), "the secret was echoed");
    publish_ok(&server, &token, &generic_event("logged")).await;
    let bad = client()
        .get(server.at(&format!("{EVENTS}?resource={RESOURCE}&after=0")))
        .bearer_auth(format!("{token}x"))
        .send()
        .await
        .expect("query");
    assert_eq!(bad.status(), 401);
    // Let the handshake fail against the closed port at least once.
    server
        .wait_for_log("webhook attempt", Duration::from_secs(10))
        .await;
    let log = server.log();
    for leak in [
        secret,
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        token.as_str(),
        "query-secret",
    ] {
        assert!(!log.contains(leak), "the log holds {leak}");
    }
}
