//! Graceful shutdown, back-pressure and isolation between webhook endpoints, through the binary.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{RESOURCE, Server, client, event_ids, follow, generic_event, publish};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::json;

/// SIGTERM under load: every publish is either acknowledged and stored, or refused; the process
/// exits cleanly, and after a restart every acknowledged event is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_commits_or_refuses_every_publish() {
    let mut server = Server::start();
    let token = server.ttd();
    let url = Arc::new(server.url.clone());
    let mut clients = Vec::new();
    for c in 0..8 {
        let (url, token) = (url.clone(), token.clone());
        clients.push(tokio::spawn(async move {
            let http = client();
            let mut acked = Vec::new();
            for i in 0..100_000 {
                let id = format!("t{c}-{i}");
                let sent = http
                    .post(format!("{url}/events/api/v1/events"))
                    .bearer_auth(&token)
                    .header("content-type", "application/cloudevents+json")
                    .body(generic_event(&id).to_string())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 200 => acked.push(id),
                    Ok(r) => {
                        // Refused while stopping: never a 2xx for what was not stored.
                        assert!(r.status().is_server_error(), "{id}: {}", r.status());
                        break;
                    }
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = server.terminate();
    assert!(
        status.success(),
        "exit after SIGTERM: {status:?}; log: {}",
        server.log()
    );
    let mut acknowledged = HashSet::new();
    for c in clients {
        acknowledged.extend(c.await.expect("client"));
    }
    assert!(
        acknowledged.len() > 20,
        "too little load: {}",
        acknowledged.len()
    );
    server.restart();
    let (events, _) = follow(
        &server.at(&format!(
            "/events/api/v1/events?resource={RESOURCE}&after=0&size=1000"
        )),
        &token,
    )
    .await;
    let stored: HashSet<String> = event_ids(&events).into_iter().collect();
    let lost = acknowledged.difference(&stored).count();
    assert_eq!(lost, 0, "{lost} acknowledged events were lost");
    assert_eq!(stored.len(), events.len(), "an event was stored twice");
}

/// With a one-slot ingest queue and many concurrent publishers, publishes that cannot wait get 503
/// problem details with Retry-After; every acknowledged one is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_ingest_queue_refuses_with_retry_after_and_loses_nothing() {
    let server = Arc::new(Server::start_with(&["--ingest-queue", "1"]));
    let token = Arc::new(server.ttd());
    let refused = Arc::new(AtomicUsize::new(0));
    let mut publishers = Vec::new();
    for p in 0..48 {
        let (server, token, refused) = (server.clone(), token.clone(), refused.clone());
        publishers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..15 {
                let id = format!("q{p}-{i}");
                let response = publish(&server, &token, &generic_event(&id)).await;
                match response.status().as_u16() {
                    200 => acked.push(id),
                    503 => {
                        assert!(response.headers().contains_key("retry-after"));
                        let ct = response.headers()["content-type"].to_str().expect("ascii");
                        assert_eq!(ct, "application/problem+json");
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                    other => panic!("{id}: unexpected {other}"),
                }
            }
            acked
        }));
    }
    let mut acknowledged = HashSet::new();
    for p in publishers {
        acknowledged.extend(p.await.expect("publisher"));
    }
    eprintln!(
        "ingest queue of 1: {} acknowledged, {} refused with 503",
        acknowledged.len(),
        refused.load(Ordering::SeqCst)
    );
    let (events, _) = follow(
        &server.at(&format!(
            "/events/api/v1/events?resource={RESOURCE}&after=0&size=1000"
        )),
        &token,
    )
    .await;
    let stored: HashSet<String> = event_ids(&events).into_iter().collect();
    assert_eq!(stored, acknowledged, "stored and acknowledged differ");
}

#[derive(Clone, Default)]
struct Received {
    ids: Arc<Mutex<Vec<String>>>,
}

async fn fast(State(received): State<Received>, body: String) -> StatusCode {
    if let Ok(event) = serde_json::from_str::<serde_json::Value>(&body)
        && event["type"] != "platform.events.validatesubscription"
        && let Some(id) = event["id"].as_str()
    {
        received.ids.lock().expect("lock").push(id.to_owned());
    }
    StatusCode::OK
}

/// Answers handshakes, then never answers an event (until the test ends).
async fn stuck(body: String) -> StatusCode {
    if body.contains("platform.events.validatesubscription") {
        return StatusCode::OK;
    }
    tokio::time::sleep(Duration::from_secs(600)).await;
    StatusCode::OK
}

/// An endpoint that hangs takes at most its share of the delivery slots: another subscription's
/// events keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_endpoint_does_not_hold_up_other_subscriptions() {
    let received = Received::default();
    let app = axum::Router::new()
        .route("/fast", post(fast))
        .route("/stuck", post(stuck))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let receiver = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let server = Server::start_with(&[
        "--allow-http-webhooks",
        "--allow-private-webhooks",
        "--push-concurrency",
        "4",
        "--webhook-timeout",
        "120",
    ]);
    let token = server.ttd();
    for path in ["stuck", "fast"] {
        let created = client()
            .post(server.at("/events/api/v1/subscriptions"))
            .bearer_auth(&token)
            .json(&json!({"endPoint": format!("{receiver}/{path}"), "resourceFilter": RESOURCE}))
            .send()
            .await
            .expect("subscribe");
        assert_eq!(created.status(), 201);
    }
    let mut validated = false;
    for _ in 0..100 {
        let list: serde_json::Value = client()
            .get(server.at("/events/api/v1/subscriptions"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        if list["subscriptions"]
            .as_array()
            .is_some_and(|s| s.iter().all(|s| s["validated"] == true))
        {
            validated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(validated, "the subscriptions were not validated");

    let ids: Vec<String> = (0..20).map(|i| format!("iso-{i}")).collect();
    for id in &ids {
        assert_eq!(
            publish(&server, &token, &generic_event(id)).await.status(),
            200
        );
    }
    let mut got = Vec::new();
    for _ in 0..200 {
        got = received.ids.lock().expect("lock").clone();
        if got.len() >= ids.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got: HashSet<String> = got.into_iter().collect();
    let expected: HashSet<String> = ids.into_iter().collect();
    assert_eq!(
        got,
        expected,
        "the fast endpoint waited for the stuck one; log: {}",
        server.log()
    );
}

/// Tokens and webhook secrets never reach the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_tokens_stay_out_of_the_log() {
    let server = Server::start_with(&["--allow-http-webhooks", "--allow-private-webhooks"]);
    let token = server.ttd();
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let created = client()
        .post(server.at("/events/api/v1/subscriptions"))
        .bearer_auth(&token)
        .json(&json!({
            "endPoint": "http://127.0.0.1:9/hook?token=query-secret",
            "resourceFilter": RESOURCE,
            "secret": secret
        }))
        .send()
        .await
        .expect("subscribe");
    assert_eq!(created.status(), 201);
    let body = created.text().await.expect("body");
    assert!(!body.contains(secret), "the secret was echoed");
    assert_eq!(
        publish(&server, &token, &generic_event("logged"))
            .await
            .status(),
        200
    );
    let bad = client()
        .get(server.at(&format!(
            "/events/api/v1/events?resource={RESOURCE}&after=0"
        )))
        .bearer_auth(format!("{token}x"))
        .send()
        .await
        .expect("query");
    assert_eq!(bad.status(), 401);
    // Let the handshake fail against the closed port at least once.
    let mut attempted = false;
    for _ in 0..100 {
        if server.log().contains("webhook attempt") {
            attempted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        attempted,
        "no delivery attempt was logged: {}",
        server.log()
    );
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
