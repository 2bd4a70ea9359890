//! Changes racing live deliveries, each cut by kill -9 in the middle: a PATCH of the endpoint
//! (while its handshake is still unanswered) and a disable for failing too long. Nothing queued is
//! lost: every event reaches the endpoint the subscription points at when it goes out, none goes
//! to the old endpoint after the change, and none is sent twice at once. On SQLite and PostgreSQL.

use std::collections::BTreeSet;
use std::time::Duration;

use hendelse_store::testing::TestDatabase;
use serde_json::{Value, json};

use crate::common::{
    PATIENCE, RESOURCE, Receiver, Reply, SUBSCRIPTIONS, Server, TO_LOOPBACK, client,
    create_subscription, eventually, generic_event, get_subscription, id_of, publish_batch_ok,
    send, subscribe_validated, wait_validated,
};

/// Publishes events `prefix-from` … `prefix-(to - 1)` in batches of ten.
async fn publish_range(server: &Server, token: &str, prefix: &str, from: usize, to: usize) {
    let ids: Vec<usize> = (from..to).collect();
    for chunk in ids.chunks(10) {
        let events: Vec<Value> = chunk
            .iter()
            .map(|i| generic_event(&format!("{prefix}-{i:03}")))
            .collect();
        publish_batch_ok(server, token, &events).await;
    }
}

fn names(prefix: &str, from: usize, to: usize) -> BTreeSet<String> {
    (from..to).map(|i| format!("{prefix}-{i:03}")).collect()
}

async fn wait_for_all(receiver: &Receiver, paths: &[&str], expected: &BTreeSet<String>) {
    eventually("every event delivered", PATIENCE * 2, async || {
        let got: BTreeSet<String> = paths.iter().flat_map(|p| receiver.accepted_on(p)).collect();
        let missing: Vec<&String> = expected.difference(&got).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} missing, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            ))
        }
    })
    .await;
}

async fn a_patch_racing_deliveries_and_a_kill(extra: &[&str]) {
    let mut server = Server::start_with(
        &[
            &TO_LOOPBACK[..],
            &[
                "--retry-schedule",
                "200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms",
            ],
            extra,
        ]
        .concat(),
    );
    let receiver = Receiver::start().await;
    receiver.script(|hit| match hit.path.as_str() {
        // A slow endpoint, so that a backlog is queued when the PATCH comes.
        "/old" => Reply::ok().delay(Duration::from_millis(10)),
        // The new one refuses its handshake until phase 1.
        _ if hit.is_validation() && hit.phase == 0 => Reply::status(503),
        _ => Reply::ok(),
    });
    let ttd = server.ttd();
    let id = subscribe_validated(
        &server,
        &ttd,
        &json!({"endPoint": receiver.url("/old"), "resourceFilter": RESOURCE}),
    )
    .await;

    publish_range(&server, &ttd, "pr", 0, 100).await;
    let patched = send(
        client()
            .patch(server.at(&format!("{SUBSCRIPTIONS}/{id}")))
            .bearer_auth(&ttd)
            .json(&json!({"endPoint": receiver.url("/new")})),
    )
    .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    publish_range(&server, &ttd, "pr", 100, 200).await;
    // Killed while the new endpoint's handshake is unanswered and deliveries wait for it.
    server.restart();
    publish_range(&server, &ttd, "pr", 200, 250).await;
    receiver.set_phase(1);

    wait_for_all(&receiver, &["/old", "/new"], &names("pr", 0, 250)).await;
    let late: Vec<String> = receiver
        .ids_on("/old")
        .intersection(&names("pr", 100, 250))
        .cloned()
        .collect();
    assert!(
        late.is_empty(),
        "published after the PATCH, sent to the old endpoint: {late:?}"
    );
    assert!(
        receiver.overlaps().is_empty(),
        "sent twice at once: {:?}",
        receiver.overlaps()
    );
    let now = get_subscription(&server, &ttd, id).await.body;
    assert_eq!(now["endPoint"], receiver.url("/new"), "{now}");
    assert_eq!(now["validated"], true, "{now}");
}

async fn a_disable_racing_deliveries_and_a_kill(extra: &[&str]) {
    let started = chrono::Utc::now() - chrono::Duration::seconds(1);
    let mut server = Server::start_with(
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
    let created = create_subscription(
        &server,
        &ttd,
        &json!({"endPoint": receiver.url("/dying"), "resourceFilter": RESOURCE}),
    )
    .await;
    let id = id_of(&created.body);
    wait_validated(&server, &ttd, id).await;

    // Published while the endpoint fails, until the subscription is disabled.
    let mut published = 0;
    eventually("the subscription to be disabled", PATIENCE, async || {
        publish_range(&server, &ttd, "dr", published, published + 10).await;
        published += 10;
        let now = get_subscription(&server, &ttd, id).await.body;
        if now["enabled"] == false {
            Ok(())
        } else {
            Err(now.to_string())
        }
    })
    .await;
    let queued_before = published;
    publish_range(&server, &ttd, "dr", published, published + 20).await;
    published += 20;
    // Killed while disabled with its queue still pending.
    server.restart();
    receiver.set_phase(1);
    let enabled = send(
        client()
            .post(server.at(&format!("{SUBSCRIPTIONS}/{id}/enable")))
            .bearer_auth(&ttd),
    )
    .await;
    assert_eq!(enabled.status, 200, "{}", enabled.text);
    // What was queued before the disable goes out after the enable.
    wait_for_all(
        &receiver,
        &["/dying"],
        &names("dr", 0, queued_before.saturating_sub(10)),
    )
    .await;
    // What was published while it was disabled comes back with a replay.
    let replayed = send(
        client()
            .post(server.at(&format!("{SUBSCRIPTIONS}/{id}/replay")))
            .bearer_auth(&ttd)
            .json(&json!({"from": started.to_rfc3339()})),
    )
    .await;
    assert_eq!(replayed.status, 202, "{}", replayed.text);
    wait_for_all(&receiver, &["/dying"], &names("dr", 0, published)).await;
    assert!(
        receiver.overlaps().is_empty(),
        "sent twice at once: {:?}",
        receiver.overlaps()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_patch_racing_deliveries_and_a_kill_9_loses_nothing() {
    a_patch_racing_deliveries_and_a_kill(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_patch_racing_deliveries_and_a_kill_9_loses_nothing() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    a_patch_racing_deliveries_and_a_kill(&["--database-url", &db.url]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_disable_racing_deliveries_and_a_kill_9_loses_nothing() {
    a_disable_racing_deliveries_and_a_kill(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_disable_racing_deliveries_and_a_kill_9_loses_nothing() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    a_disable_racing_deliveries_and_a_kill(&["--database-url", &db.url]).await;
}
