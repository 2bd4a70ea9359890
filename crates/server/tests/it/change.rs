//! Changing a subscription (`PATCH …/subscriptions/{id}` and `hendelse subscriptions update`),
//! black-box on both backends: a new endpoint gets no delivery before it answered its handshake
//! and nothing queued is lost; a new secret signs at once with the previous one beside it for the
//! overlap, then alone; filters cannot change.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use hendelse_store::testing::TestDatabase;
use serde_json::{Value, json};

use crate::common::{
    Answer, BIN, Gate, Hit, RESOURCE, Receiver, Reply, SUBSCRIPTIONS, Server, TO_LOOPBACK,
    assert_problem, client, create_subscription, eventually, generic_event, get_subscription,
    id_of, publish_ok, secret_of, send, subscribe_validated, verifies,
};

async fn patch(server: &Server, token: &str, id: i64, body: &Value) -> Answer {
    send(
        client()
            .patch(server.at(&format!("{SUBSCRIPTIONS}/{id}")))
            .bearer_auth(token)
            .json(body),
    )
    .await
}

async fn patch_ok(server: &Server, token: &str, id: i64, body: &Value) -> Value {
    let answer = patch(server, token, id, body).await;
    assert_eq!(answer.status, 200, "PATCH {body}: {}", answer.text);
    answer.body
}

fn signatures(hit: &Hit) -> usize {
    hit.header("webhook-signature")
        .map_or(0, |s| s.split(' ').filter(|s| !s.is_empty()).count())
}

async fn changes_keep_every_delivery(extra: &[&str], with_cli: bool) {
    let server = Server::start_with(
        &[
            &TO_LOOPBACK[..],
            &[
                "--retry-schedule",
                "200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms",
                "--secret-rotation-overlap",
                "2s",
            ],
            extra,
        ]
        .concat(),
    );
    let receiver = Receiver::start().await;
    // The new endpoint refuses its handshake until phase 1.
    receiver.script(|hit| {
        if hit.path == "/new" && hit.is_validation() && hit.phase == 0 {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    });
    let ttd = server.ttd();
    let first_secret = secret_of(32);
    let id = subscribe_validated(
        &server,
        &ttd,
        &json!({"endPoint": receiver.url("/old"), "resourceFilter": RESOURCE, "secret": first_secret}),
    )
    .await;
    publish_ok(&server, &ttd, &generic_event("ch-1")).await;
    let hit = receiver.delivered("/old", "ch-1").await;
    assert_eq!(signatures(&hit), 1);
    assert!(verifies(&first_secret, &hit));

    // A new endpoint: nothing goes anywhere until it answered its handshake, then all of it there.
    let moved = patch_ok(
        &server,
        &ttd,
        id,
        &json!({"endPoint": receiver.url("/new")}),
    )
    .await;
    assert_eq!(moved["endPoint"], receiver.url("/new"));
    assert_eq!(moved["validated"], false, "{moved}");
    publish_ok(&server, &ttd, &generic_event("ch-2")).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        !receiver.ids_on("/old").contains("ch-2"),
        "not to the old endpoint"
    );
    assert!(
        !receiver.ids_on("/new").contains("ch-2"),
        "not before the handshake"
    );
    assert!(
        receiver
            .hits_on("/new")
            .iter()
            .any(|h| h.is_validation() && h.status == 503),
        "the new endpoint was asked"
    );
    receiver.set_phase(1);
    receiver.delivered("/new", "ch-2").await;
    assert_eq!(
        get_subscription(&server, &ttd, id).await.body["validated"],
        true
    );

    // A new secret signs at once, the previous one beside it for the overlap.
    let second_secret = secret_of(32);
    let rotated = patch_ok(&server, &ttd, id, &json!({"secret": second_secret})).await;
    assert_eq!(rotated["hasSecret"], true);
    assert!(rotated["previousSecretUntil"].is_string(), "{rotated}");
    let body = rotated.to_string();
    for s in [&first_secret, &second_secret] {
        assert!(
            !body.contains(s.trim_start_matches("whsec_")),
            "no secret shown"
        );
    }
    publish_ok(&server, &ttd, &generic_event("ch-3")).await;
    let both = receiver.delivered("/new", "ch-3").await;
    assert_eq!(
        signatures(&both),
        2,
        "{:?}",
        both.header("webhook-signature")
    );
    assert!(verifies(&second_secret, &both) && verifies(&first_secret, &both));
    // After the overlap only the new one.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    publish_ok(&server, &ttd, &generic_event("ch-4")).await;
    let after = receiver.delivered("/new", "ch-4").await;
    assert_eq!(signatures(&after), 1);
    assert!(verifies(&second_secret, &after));
    assert!(!verifies(&first_secret, &after));
    assert!(
        get_subscription(&server, &ttd, id)
            .await
            .body
            .get("previousSecretUntil")
            .is_none()
    );

    // No secret at all: unsigned.
    let unsigned = if with_cli {
        let out = Command::new(BIN)
            .args(["subscriptions", "update", &id.to_string(), "--no-secret"])
            .args(["--url", &server.url, "--token", &ttd])
            .output()
            .expect("run hendelse");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).expect("JSON on stdout")
    } else {
        patch_ok(&server, &ttd, id, &json!({"secret": null})).await
    };
    assert_eq!(unsigned["hasSecret"], false, "{unsigned}");
    publish_ok(&server, &ttd, &generic_event("ch-5")).await;
    let plain = receiver.delivered("/new", "ch-5").await;
    assert_eq!(signatures(&plain), 0);

    // Every event arrived, each where the subscription pointed when it went out.
    let all: BTreeSet<String> = receiver
        .ids_on("/old")
        .union(&receiver.ids_on("/new"))
        .cloned()
        .collect();
    let expected: BTreeSet<String> = (1..=5).map(|i| format!("ch-{i}")).collect();
    assert_eq!(all, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_changes_move_deliveries_only_to_a_validated_endpoint_and_rotate_secrets() {
    changes_keep_every_delivery(&[], true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_changes_move_deliveries_only_to_a_validated_endpoint_and_rotate_secrets() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    changes_keep_every_delivery(&["--database-url", &db.url], false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_changes_get_problem_details_and_change_nothing() {
    let server = Server::start_with(&TO_LOOPBACK);
    let receiver = Receiver::start().await;
    let ttd = server.ttd();
    let created = create_subscription(
        &server,
        &ttd,
        &json!({"endPoint": receiver.url("/stay"), "resourceFilter": RESOURCE}),
    )
    .await;
    let id = id_of(&created.body);
    let cases: [(Value, &str); 7] = [
        (json!({"typeFilter": "x.%"}), "typeFilter cannot be changed"),
        (
            json!({"resourceFilter": RESOURCE}),
            "resourceFilter cannot be changed",
        ),
        (
            json!({"maxEventsPerBatch": 10}),
            "maxEventsPerBatch cannot be changed",
        ),
        (json!({"endpoint": "https://x.example"}), "unknown field"),
        (json!({}), "Nothing to change"),
        (json!({"secret": "not-a-secret"}), "whsec_"),
        (json!({"endPoint": "not a url"}), "endPoint"),
    ];
    for (body, mentions) in cases {
        let answer = patch(&server, &ttd, id, &body).await;
        assert_problem(&answer, 400, &body.to_string());
        assert!(answer.text.contains(mentions), "{body}: {}", answer.text);
    }
    // A value of the wrong type is named by its field.
    let wrong_type = patch(&server, &ttd, id, &json!({"rateLimit": "fast"})).await;
    assert_problem(&wrong_type, 400, "rateLimit as text");
    assert!(
        wrong_type.body["errors"]["rateLimit"].is_array(),
        "{}",
        wrong_type.text
    );
    let answer = send(
        client()
            .patch(server.at(&format!("{SUBSCRIPTIONS}/{id}")))
            .bearer_auth(&ttd)
            .body("[1,2]"),
    )
    .await;
    assert_problem(&answer, 400, "not an object");
    let answer = patch(
        &server,
        &server.skd(),
        id,
        &json!({"endPoint": receiver.url("/x")}),
    )
    .await;
    assert_problem(&answer, 404, "another consumer's subscription");
    let anonymous = send(
        client()
            .patch(server.at(&format!("{SUBSCRIPTIONS}/{id}")))
            .json(&json!({"endPoint": receiver.url("/x")})),
    )
    .await;
    assert_problem(&anonymous, 401, "no token");
    let unchanged = get_subscription(&server, &ttd, id).await.body;
    assert_eq!(unchanged["endPoint"], receiver.url("/stay"), "{unchanged}");
    assert!(unchanged["typeFilter"].is_null());
}

/// A PATCH while the old endpoint's handshake is still in flight: that handshake's late success
/// validates nothing, and the old endpoint's failures do not count against the new one.
async fn a_late_handshake_validates_only_its_own_endpoint(extra: &[&str]) {
    let server = Server::start_with(
        &[
            &TO_LOOPBACK[..],
            &[
                "--retry-schedule",
                "200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms",
            ],
            extra,
        ]
        .concat(),
    );
    let receiver = Receiver::start().await;
    let held = Gate::new();
    let script_gate = held.clone();
    receiver.script(move |hit| match hit.path.as_str() {
        // Takes handshakes, fails every event.
        "/failing" if hit.is_validation() => Reply::ok(),
        "/failing" => Reply::status(500),
        // Answers its handshake only when the gate opens.
        "/slow" => Reply::ok().after(&script_gate),
        // Refuses its handshake until phase 1.
        _ if hit.is_validation() && hit.phase == 0 => Reply::status(503),
        _ => Reply::ok(),
    });
    let ttd = server.ttd();
    let id = subscribe_validated(
        &server,
        &ttd,
        &json!({"endPoint": receiver.url("/failing"), "resourceFilter": RESOURCE}),
    )
    .await;
    publish_ok(&server, &ttd, &generic_event("late-1")).await;
    eventually(
        "the failing endpoint's streak",
        Duration::from_secs(20),
        async || {
            let body = get_subscription(&server, &ttd, id).await.body;
            (body["health"]["consecutiveFailures"].as_u64() >= Some(1))
                .then_some(())
                .ok_or_else(|| String::from("not yet"))
        },
    )
    .await;

    let moved = patch_ok(
        &server,
        &ttd,
        id,
        &json!({"endPoint": receiver.url("/slow")}),
    )
    .await;
    assert_eq!(moved["health"]["consecutiveFailures"], 0, "{moved}");
    assert_eq!(moved["health"]["state"], "healthy", "{moved}");
    eventually(
        "the slow endpoint's handshake",
        Duration::from_secs(20),
        async || {
            receiver
                .hits_on("/slow")
                .iter()
                .any(|h| h.is_validation() && !h.answered)
                .then_some(())
                .ok_or_else(|| String::from("not yet"))
        },
    )
    .await;
    patch_ok(
        &server,
        &ttd,
        id,
        &json!({"endPoint": receiver.url("/new")}),
    )
    .await;
    held.open();
    eventually(
        "the slow handshake's answer",
        Duration::from_secs(20),
        async || {
            receiver
                .hits_on("/slow")
                .iter()
                .any(|h| h.is_validation() && h.answered)
                .then_some(())
                .ok_or_else(|| String::from("not yet"))
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let now = get_subscription(&server, &ttd, id).await.body;
    assert_eq!(
        now["validated"], false,
        "validated by the old endpoint's handshake: {now}"
    );
    for path in ["/slow", "/new"] {
        assert!(
            !receiver.ids_on(path).contains("late-1"),
            "{path} got the event before /new answered its handshake"
        );
    }
    receiver.set_phase(1);
    receiver.delivered("/new", "late-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_late_handshake_validates_only_its_own_endpoint() {
    a_late_handshake_validates_only_its_own_endpoint(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_late_handshake_validates_only_its_own_endpoint() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    a_late_handshake_validates_only_its_own_endpoint(&["--database-url", &db.url]).await;
}
