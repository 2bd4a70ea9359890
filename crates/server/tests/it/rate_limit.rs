//! A subscription's `rateLimit`: its deliveries never go faster, also from several nodes at once
//! (the permits are taken from the store), while other subscriptions are not held up. The checks
//! bound the rate from above and the time the limited deliveries take from below, which a slower
//! machine cannot break.

use std::time::{Duration, Instant};

use hendelse_store::testing::TestDatabase;
use serde_json::{Value, json};

use crate::common::{
    PATIENCE, RESOURCE, Receiver, Server, TO_LOOPBACK, assert_problem, create_subscription,
    eventually, generic_event, id_of, publish_batch_ok, subscribe, wait_validated,
};

const RATE: usize = 5;
const EVENTS: usize = 20;

async fn all_arrived(receiver: &Receiver, path: &str) -> Vec<Instant> {
    eventually(
        &format!("{EVENTS} deliveries at {path}"),
        PATIENCE,
        async || {
            let hits = receiver.deliveries_on(path);
            if hits.len() >= EVENTS {
                Ok(hits.iter().map(|h| h.at).collect::<Vec<_>>())
            } else {
                Err(hits.len().to_string())
            }
        },
    )
    .await
}

/// The most arrivals in any second.
fn busiest_second(arrivals: &[Instant]) -> usize {
    arrivals
        .iter()
        .map(|start| {
            arrivals
                .iter()
                .filter(|t| **t >= *start && t.duration_since(*start) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0)
}

async fn limited_and_free(nodes: &[&Server]) {
    let server = nodes[0];
    let receiver = Receiver::start().await;
    let ttd = server.ttd();
    let limited = subscribe(
        server,
        &ttd,
        &json!({"endPoint": receiver.url("/limited"), "resourceFilter": RESOURCE, "rateLimit": RATE}),
    )
    .await;
    assert_eq!(limited["rateLimit"], RATE, "{limited}");
    let limited = id_of(&limited);
    let free = subscribe(
        server,
        &ttd,
        &json!({"endPoint": receiver.url("/free"), "resourceFilter": RESOURCE}),
    )
    .await;
    wait_validated(server, &ttd, limited).await;
    wait_validated(server, &ttd, id_of(&free)).await;

    let events: Vec<Value> = (0..EVENTS)
        .map(|i| generic_event(&format!("rate-{i:02}")))
        .collect();
    publish_batch_ok(server, &ttd, &events).await;
    let mut slow = all_arrived(&receiver, "/limited").await;
    let mut fast = all_arrived(&receiver, "/free").await;
    slow.sort();
    fast.sort();
    let busiest = busiest_second(&slow);
    let span = slow[EVENTS - 1].duration_since(slow[0]);
    eprintln!(
        "{} node(s): {EVENTS} limited deliveries over {span:?}, at most {busiest} in a second; \
         the free subscription's {EVENTS} over {:?}",
        nodes.len(),
        fast[EVENTS - 1].duration_since(fast[0])
    );
    // Permits are spaced 1/RATE apart; one late wake-up may bring two closer.
    assert!(busiest <= RATE + 1, "{busiest} deliveries in one second");
    let least = Duration::from_millis(((EVENTS - 1) * 1000 / RATE) as u64 - 300);
    assert!(span >= least, "{EVENTS} limited deliveries in {span:?}");
    // The limit holds up nobody else: the free subscription had everything before the limited
    // one had half.
    assert!(
        fast[EVENTS - 1] < slow[EVENTS / 2],
        "the free subscription waited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_rate_limit_is_never_exceeded_and_holds_up_nobody_else() {
    let server = Server::start_with(&TO_LOOPBACK);
    limited_and_free(&[&server]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_nodes_together_keep_a_rate_limit() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let a = Server::start_with(&[&TO_LOOPBACK[..], &["--database-url", &db.url]].concat());
    let b = Server::start_beside(
        &a,
        &[&TO_LOOPBACK[..], &["--database-url", &db.url]].concat(),
    );
    limited_and_free(&[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_out_of_range_are_refused() {
    let server = Server::start_with(&TO_LOOPBACK);
    let ttd = server.ttd();
    for (rate, mentions) in [
        (json!(0), "rateLimit must be 1 to 10000"),
        (json!(10_001), "rateLimit must be 1 to 10000"),
        (json!(-1), "expected a whole number within range"),
        (json!("fast"), "expected a whole number"),
    ] {
        let body = json!({"endPoint": "http://127.0.0.1:9/x", "resourceFilter": RESOURCE, "rateLimit": rate});
        let answer = create_subscription(&server, &ttd, &body).await;
        assert_problem(&answer, 400, &body.to_string());
        assert!(answer.text.contains(mentions), "{}", answer.text);
    }
    // And as a change.
    let created = create_subscription(
        &server,
        &ttd,
        &json!({"endPoint": "http://127.0.0.1:9/x", "resourceFilter": RESOURCE}),
    )
    .await;
    let id = id_of(&created.body);
    let answer = crate::common::send(
        crate::common::client()
            .patch(server.at(&format!("{}/{id}", crate::common::SUBSCRIPTIONS)))
            .bearer_auth(&ttd)
            .json(&json!({"rateLimit": 0})),
    )
    .await;
    assert_problem(&answer, 400, "a zero rate");
    assert!(answer.text.contains("rateLimit must be"), "{}", answer.text);
}
