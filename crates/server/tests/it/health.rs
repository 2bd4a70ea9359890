//! Endpoint health, black-box: a failing endpoint rests as a whole and shows its streak; one that
//! fails for longer than `--disable-failing-after` is disabled, its owner told by an event it can
//! read, and `…/enable` (HTTP or CLI) resumes its queued work. On SQLite and PostgreSQL.

use std::process::Command;
use std::time::Duration;

use hendelse_store::testing::TestDatabase;
use serde_json::Value;

use crate::common::{
    Answer, BIN, PATIENCE, Receiver, SUBSCRIPTIONS, Server, TO_LOOPBACK, client, deliveries,
    eventually, generic_event, get, get_public, get_subscription, publish_batch_ok, publish_ok,
    send, subscribe_to, wait_validated,
};

const SUBSCRIPTION_EVENTS: &str = "urn:altinn:resource:events-subscriptions";
const DISABLED_TYPE: &str = "platform.events.subscription.disabled";

async fn health_of(server: &Server, token: &str, id: i64) -> Value {
    let answer = get_subscription(server, token, id).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    answer.body
}

async fn wait_for_state(server: &Server, token: &str, id: i64, state: &str) -> Value {
    eventually(
        &format!("subscription {id} to be {state}"),
        PATIENCE,
        async || {
            let subscription = health_of(server, token, id).await;
            if subscription["health"]["state"] == state {
                Ok(subscription)
            } else {
                Err(subscription.to_string())
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_rests_as_a_whole_shows_its_health_and_recovers() {
    const EVENTS: usize = 60;
    // Every rest and retry is a second; two requests of the subscription at a time.
    let server = Server::start_with(
        &[
            &TO_LOOPBACK[..],
            &[
                "--retry-schedule",
                "1s,1s,1s,1s,1s,1s,1s,1s",
                "--push-per-subscription",
                "2",
                "--push-concurrency",
                "8",
            ],
        ]
        .concat(),
    );
    let receiver = Receiver::start().await;
    receiver.fail_deliveries_until_phase_1(500);
    let ttd = server.ttd();
    let id = subscribe_to(&server, &ttd, &receiver.url("/resting")).await;
    let fresh = wait_validated(&server, &ttd, id).await;
    assert_eq!(fresh["health"]["state"], "healthy", "{fresh}");
    assert_eq!(fresh["health"]["consecutiveFailures"], 0);

    let events: Vec<Value> = (0..EVENTS)
        .map(|i| generic_event(&format!("rest-{i:02}")))
        .collect();
    publish_batch_ok(&server, &ttd, &events).await;
    let failing = wait_for_state(&server, &ttd, id, "failing").await;
    let health = &failing["health"];
    assert!(
        health["consecutiveFailures"].as_u64() >= Some(1),
        "{failing}"
    );
    assert_eq!(health["lastError"], "status 500", "{failing}");
    assert!(health["failingSince"].is_string(), "{failing}");
    assert!(health["lastFailure"].is_string(), "{failing}");
    let metrics = get_public(&server, "/metrics").await;
    assert!(
        metrics
            .text
            .contains("hendelse_subscriptions_by_state{state=\"failing\"} 1"),
        "{}",
        metrics.text
    );

    // The endpoint rests after each failure: in the seconds that follow only a few deliveries
    // are tried (a slower machine tries fewer still), not each of the queued ones.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let attempted = receiver.deliveries_on("/resting");
    eprintln!(
        "{} attempts in the first seconds of failing, for {EVENTS} queued deliveries",
        attempted.len()
    );
    assert!(
        attempted.len() < EVENTS,
        "{} attempts for {EVENTS} queued deliveries: the endpoint did not rest",
        attempted.len()
    );
    assert!(!attempted.is_empty());

    // Back up: the first success ends the streak and the queue drains.
    receiver.set_phase(1);
    eventually("every event delivered", PATIENCE, async || {
        let n = receiver.accepted_on("/resting").len();
        if n == EVENTS {
            Ok(())
        } else {
            Err(n.to_string())
        }
    })
    .await;
    let healthy = wait_for_state(&server, &ttd, id, "healthy").await;
    assert_eq!(healthy["health"]["consecutiveFailures"], 0, "{healthy}");
    assert!(healthy["health"]["lastSuccess"].is_string(), "{healthy}");
    assert!(healthy["health"].get("failingSince").is_none(), "{healthy}");
}

/// Enables the subscription through the API, or with `hendelse subscriptions enable`.
async fn enable(server: &Server, token: &str, id: i64, with_cli: bool) -> Value {
    if with_cli {
        let out = Command::new(BIN)
            .args(["subscriptions", "enable", &id.to_string()])
            .args(["--url", &server.url, "--token", token])
            .output()
            .expect("run hendelse");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON on stdout")
    } else {
        let answer: Answer = send(
            client()
                .post(server.at(&format!("{SUBSCRIPTIONS}/{id}/enable")))
                .bearer_auth(token),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        answer.body
    }
}

async fn disabled_after_failing_too_long(extra: &[&str], with_cli: bool) {
    let server = Server::start_with(
        &[
            &TO_LOOPBACK[..],
            &[
                "--disable-failing-after",
                "1s",
                "--retry-schedule",
                "200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms",
            ],
            extra,
        ]
        .concat(),
    );
    let receiver = Receiver::start().await;
    receiver.fail_deliveries_until_phase_1(503);
    let ttd = server.ttd();
    let id = subscribe_to(&server, &ttd, &receiver.url("/dying")).await;
    wait_validated(&server, &ttd, id).await;
    for i in 0..5 {
        publish_ok(&server, &ttd, &generic_event(&format!("dying-{i}"))).await;
    }
    let disabled = wait_for_state(&server, &ttd, id, "disabled").await;
    assert_eq!(disabled["enabled"], false, "{disabled}");
    let reason = disabled["disabledReason"].as_str().expect("a reason");
    assert!(
        reason.contains("failed since") && reason.contains("status 503"),
        "{reason}"
    );

    // The owner can read why; nobody else can.
    let feed = server.at(&format!(
        "/events/api/v1/events?resource={SUBSCRIPTION_EVENTS}&after=0"
    ));
    let (status, _, page) = get(&feed, &ttd).await;
    assert_eq!(status, 200, "{page}");
    let told: Vec<&Value> = page
        .as_array()
        .expect("a page of events")
        .iter()
        .filter(|e| e["type"] == DISABLED_TYPE && e["data"]["subscriptionId"] == id)
        .collect();
    assert_eq!(told.len(), 1, "{page}");
    assert_eq!(told[0]["subject"], "/org/ttd");
    assert_eq!(told[0]["resource"], SUBSCRIPTION_EVENTS);
    assert_eq!(told[0]["data"]["reason"], reason);
    let (status, _, others) = get(&feed, &server.skd()).await;
    assert_eq!(status, 200, "{others}");
    assert_eq!(others.as_array().map(Vec::len), Some(0), "{others}");

    // While disabled nothing more piles up.
    let queued = deliveries(&server, &ttd, id, None).await.len();
    for i in 0..3 {
        publish_ok(&server, &ttd, &generic_event(&format!("while-off-{i}"))).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(deliveries(&server, &ttd, id, None).await.len(), queued);

    // Enabled again: a fresh health record, and what was still queued goes out.
    receiver.set_phase(1);
    let enabled = enable(&server, &ttd, id, with_cli).await;
    assert_eq!(enabled["enabled"], true, "{enabled}");
    assert_eq!(enabled["health"]["state"], "healthy", "{enabled}");
    eventually(
        "the queued deliveries to go out",
        PATIENCE,
        async || match deliveries(&server, &ttd, id, Some("pending")).await.len() {
            0 => Ok(()),
            n => Err(format!("{n} pending")),
        },
    )
    .await;
    let delivered = receiver.accepted_on("/dying");
    assert!(
        !delivered.iter().any(|id| id.starts_with("while-off")),
        "nothing was queued while disabled: {delivered:?}"
    );
    // Later events flow again.
    publish_ok(&server, &ttd, &generic_event("after-enable")).await;
    eventually("a new event delivered", PATIENCE, async || {
        if receiver.accepted_on("/dying").contains("after-enable") {
            Ok(())
        } else {
            Err(format!("{:?}", receiver.accepted_on("/dying")))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_subscription_failing_too_long_is_disabled_told_and_enabled_by_the_cli() {
    disabled_after_failing_too_long(&[], true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_subscription_failing_too_long_is_disabled_told_and_enabled_again() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    disabled_after_failing_too_long(&["--database-url", &db.url], false).await;
}

/// Enabling says the endpoint is back: retries waiting for a far step of the ladder (and the
/// endpoint's rest) go out at once, not at that step.
async fn enabled_retries_go_out_at_once(extra: &[&str]) {
    const EVENTS: usize = 3;
    let server = Server::start_with(
        &[
            &TO_LOOPBACK[..],
            &["--retry-schedule", "100ms,100ms,100ms,1h"],
            extra,
        ]
        .concat(),
    );
    let receiver = Receiver::start().await;
    receiver.fail_deliveries_until_phase_1(503);
    let ttd = server.ttd();
    let id = subscribe_to(&server, &ttd, &receiver.url("/far")).await;
    wait_validated(&server, &ttd, id).await;
    for i in 0..EVENTS {
        publish_ok(&server, &ttd, &generic_event(&format!("far-{i}"))).await;
    }
    // The streak has grown the endpoint's rest (and the deliveries' next step) to an hour.
    eventually("every delivery an hour away", PATIENCE, async || {
        let list = deliveries(&server, &ttd, id, Some("pending")).await;
        let soon = chrono::Utc::now() + chrono::Duration::minutes(30);
        let far = list
            .iter()
            .filter(|d| {
                d["nextAttempt"]
                    .as_str()
                    .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
                    .is_some_and(|at| at > soon)
            })
            .count();
        if far == EVENTS {
            Ok(())
        } else {
            Err(format!("{list:?}"))
        }
    })
    .await;

    receiver.set_phase(1);
    enable(&server, &ttd, id, false).await;
    eventually("the retries to go out at once", PATIENCE, async || {
        let accepted = receiver.accepted_on("/far");
        if (0..EVENTS).all(|i| accepted.contains(&format!("far-{i}"))) {
            Ok(())
        } else {
            Err(format!("{accepted:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_enabling_sends_retries_waiting_far_ahead_at_once() {
    enabled_retries_go_out_at_once(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_enabling_sends_retries_waiting_far_ahead_at_once() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    enabled_retries_go_out_at_once(&["--database-url", &db.url]).await;
}
