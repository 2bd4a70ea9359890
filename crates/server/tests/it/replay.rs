//! Replays (`POST /events/api/v1/subscriptions/{id}/replay` and `hendelse subscriptions
//! replay`), black-box on both backends: a window of stored events queued again in order, with
//! new webhook ids and the replay's id in a header; idempotent per `Idempotency-Key`; bounded;
//! bad requests answered with problem details.

use std::process::Command;
use std::time::Duration;

use hendelse_store::testing::TestDatabase;
use serde_json::{Value, json};

use crate::common::{
    Answer, BIN, PATIENCE, RESOURCE, Receiver, SUBSCRIPTIONS, Server, TO_LOOPBACK, assert_problem,
    client, eventually, generic_event, publish_ok, send, subscribe, subscribe_to, wait_validated,
};

const REPLAY_HEADER: &str = "hendelse-replay-id";
/// How long to watch for deliveries that must not come.
const QUIET: Duration = Duration::from_millis(1500);

fn replay_server(extra: &[&str]) -> Server {
    // One delivery of a subscription at a time, so that the order of arrival is the queue's.
    Server::start_with(&[&TO_LOOPBACK[..], &["--push-per-subscription", "1"], extra].concat())
}

async fn replay(server: &Server, token: &str, id: i64, key: Option<&str>, body: &Value) -> Answer {
    let mut request = client()
        .post(server.at(&format!("{SUBSCRIPTIONS}/{id}/replay")))
        .bearer_auth(token)
        .json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    send(request).await
}

async fn replay_ok(
    server: &Server,
    token: &str,
    id: i64,
    key: Option<&str>,
    body: &Value,
) -> Value {
    let answer = replay(server, token, id, key, body).await;
    assert_eq!(answer.status, 202, "replay {body}: {}", answer.text);
    answer.body
}

/// The event ids of the deliveries to `path` that carry replay `replay`'s id, in arrival order.
fn replayed(receiver: &Receiver, path: &str, replay: i64) -> Vec<String> {
    let replay = replay.to_string();
    receiver
        .deliveries_on(path)
        .iter()
        .filter(|h| h.header(REPLAY_HEADER) == Some(replay.as_str()))
        .map(|h| h.event_id().to_owned())
        .collect()
}

async fn wait_replayed(receiver: &Receiver, path: &str, replay: i64, expected: &[&str]) {
    eventually(
        &format!("replay {replay} to deliver {expected:?}"),
        PATIENCE,
        async || {
            let seen = replayed(receiver, path, replay);
            if seen.len() >= expected.len() {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    )
    .await;
    assert_eq!(
        replayed(receiver, path, replay),
        expected,
        "replay {replay}"
    );
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Publishes `rp-0` … `rp-4`, with the times between `rp-1` and `rp-2` and between `rp-3` and
/// `rp-4` noted, waits for their live delivery and replays windows of them.
async fn replays_queue_windows_again(extra: &[&str]) {
    let server = replay_server(extra);
    let receiver = Receiver::start().await;
    let ttd = server.ttd();
    let id = subscribe_to(&server, &ttd, &receiver.url("/replay")).await;
    wait_validated(&server, &ttd, id).await;

    let pause = Duration::from_millis(30);
    let mut marks = Vec::new();
    for i in 0..5 {
        if i == 2 || i == 4 {
            tokio::time::sleep(pause).await;
            marks.push(now());
            tokio::time::sleep(pause).await;
        }
        publish_ok(&server, &ttd, &generic_event(&format!("rp-{i}"))).await;
    }
    eventually("the live deliveries", PATIENCE, async || {
        let n = receiver.deliveries_on("/replay").len();
        if n >= 5 { Ok(()) } else { Err(n.to_string()) }
    })
    .await;
    let live = receiver.deliveries_on("/replay");
    assert!(live.iter().all(|h| h.header(REPLAY_HEADER).is_none()));

    // After an event id: the rest of the log, in order, the same CloudEvents with new ids.
    let first = replay_ok(&server, &ttd, id, Some("k-1"), &json!({"after": "rp-1"})).await;
    assert_eq!(first["queued"], 3, "{first}");
    assert_eq!(first["repeated"], false);
    let replay_id = first["replayId"].as_i64().expect("replayId");
    wait_replayed(&receiver, "/replay", replay_id, &["rp-2", "rp-3", "rp-4"]).await;
    let replays = receiver.deliveries_on("/replay");
    for hit in replays.iter().filter(|h| h.header(REPLAY_HEADER).is_some()) {
        let original = live
            .iter()
            .find(|l| l.event_id() == hit.event_id())
            .expect("delivered live first");
        assert_eq!(
            hit.body, original.body,
            "the same CloudEvent, byte for byte"
        );
        assert_ne!(hit.webhook_id(), original.webhook_id(), "a new webhook-id");
    }

    // The same key and window again: the same replay, nothing more queued.
    let again = replay_ok(&server, &ttd, id, Some("k-1"), &json!({"after": "rp-1"})).await;
    assert_eq!(
        again,
        json!({"replayId": replay_id, "queued": 3, "repeated": true})
    );
    // The same key for another window: refused.
    let reused = replay(&server, &ttd, id, Some("k-1"), &json!({"after": "rp-0"})).await;
    assert_problem(&reused, 409, "a key reused for another window");
    assert!(reused.text.contains("Idempotency-Key"), "{}", reused.text);
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        replayed(&receiver, "/replay", replay_id).len(),
        3,
        "no repeat was sent"
    );

    // The listing marks the replay's deliveries.
    let listed = send(
        client()
            .get(server.at(&format!("{SUBSCRIPTIONS}/{id}/deliveries")))
            .bearer_auth(&ttd),
    )
    .await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let marked = listed.body["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .filter(|d| d["replayId"] == replay_id)
        .count();
    assert_eq!(marked, 3, "{}", listed.text);

    // A time window, no key: from the first mark to the second.
    let window = json!({"from": marks[0], "to": marks[1]});
    let timed = replay_ok(&server, &ttd, id, None, &window).await;
    assert_eq!(timed["queued"], 2, "{timed}");
    let timed_id = timed["replayId"].as_i64().expect("replayId");
    assert_ne!(timed_id, replay_id);
    wait_replayed(&receiver, "/replay", timed_id, &["rp-2", "rp-3"]).await;
    // Without a key the same request is a new replay.
    let unkeyed = replay_ok(&server, &ttd, id, None, &window).await;
    assert_eq!(unkeyed["repeated"], false);
    assert_ne!(unkeyed["replayId"], timed_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_replays_queue_a_window_again_once_per_key() {
    replays_queue_windows_again(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replays_queue_a_window_again_once_per_key() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    replays_queue_windows_again(&["--database-url", &db.url]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_takes_only_what_the_subscription_matches_and_is_bounded() {
    let server = replay_server(&["--replay-max-events", "2"]);
    let receiver = Receiver::start().await;
    let ttd = server.ttd();
    let body = json!({
        "endPoint": receiver.url("/typed"),
        "resourceFilter": RESOURCE,
        "typeFilter": "no.example.wanted"
    });
    let id = subscribe(&server, &ttd, &body).await["id"]
        .as_i64()
        .expect("id");
    wait_validated(&server, &ttd, id).await;
    let start = now();
    for (n, kind) in ["no.example.wanted", "no.example.other", "no.example.wanted"]
        .iter()
        .enumerate()
    {
        let mut event = generic_event(&format!("typed-{n}"));
        event["type"] = json!(kind);
        publish_ok(&server, &ttd, &event).await;
    }
    // Two of the three match: within the limit of two.
    let replayed = replay_ok(&server, &ttd, id, None, &json!({"from": start})).await;
    assert_eq!(replayed["queued"], 2, "{replayed}");
    let replay_id = replayed["replayId"].as_i64().expect("replayId");
    wait_replayed(&receiver, "/typed", replay_id, &["typed-0", "typed-2"]).await;

    // A third match makes the window too large: refused whole, saying where to cut.
    let mut event = generic_event("typed-3");
    event["type"] = json!("no.example.wanted");
    publish_ok(&server, &ttd, &event).await;
    let refused = replay(&server, &ttd, id, Some("big"), &json!({"from": start})).await;
    assert_problem(&refused, 400, "a window over the limit");
    assert!(
        refused.text.contains("more than 2") && refused.text.contains("typed-2"),
        "{}",
        refused.text
    );
    // Refused requests use up no key: the key works for a window that fits.
    let fits = replay_ok(&server, &ttd, id, Some("big"), &json!({"after": "typed-2"})).await;
    assert_eq!(fits["queued"], 1, "{fits}");
    assert_eq!(fits["repeated"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_replays_get_problem_details_naming_what_is_wrong() {
    let server = replay_server(&[]);
    let receiver = Receiver::start().await;
    let ttd = server.ttd();
    let id = subscribe_to(&server, &ttd, &receiver.url("/bad")).await;
    publish_ok(&server, &ttd, &generic_event("bad-0")).await;

    let cases: [(Value, &str); 7] = [
        (json!({}), "from (a time"),
        (json!({"from": now(), "after": "bad-0"}), "not both"),
        (
            json!({"from": "yesterday"}),
            "from must be an RFC 3339 time",
        ),
        (
            json!({"from": now(), "to": "2020-01-01T00:00:00Z"}),
            "to is before from",
        ),
        (json!({"form": now()}), "unknown field"),
        (json!({"after": "no-such-event"}), "no-such-event"),
        (json!({"after": ""}), "not empty"),
    ];
    for (body, mentions) in cases {
        let answer = replay(&server, &ttd, id, None, &body).await;
        assert_problem(&answer, 400, &body.to_string());
        assert!(answer.text.contains(mentions), "{body}: {}", answer.text);
    }
    let long_key = "k".repeat(256);
    let answer = replay(
        &server,
        &ttd,
        id,
        Some(&long_key),
        &json!({"after": "bad-0"}),
    )
    .await;
    assert_problem(&answer, 400, "a key over 255 characters");
    assert!(answer.text.contains("Idempotency-Key"), "{}", answer.text);

    // Someone else's subscription is as absent as a missing one.
    let skd = server.skd();
    let answer = replay(&server, &skd, id, None, &json!({"after": "bad-0"})).await;
    assert_problem(&answer, 404, "another consumer's subscription");
    let answer = replay(&server, &ttd, 999_999, None, &json!({"after": "bad-0"})).await;
    assert_problem(&answer, 404, "no such subscription");
    let anonymous = send(
        client()
            .post(server.at(&format!("{SUBSCRIPTIONS}/{id}/replay")))
            .json(&json!({"after": "bad-0"})),
    )
    .await;
    assert_problem(&anonymous, 401, "no token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_replays_and_explains_a_refusal_on_one_line() {
    let server = replay_server(&[]);
    let receiver = Receiver::start().await;
    let ttd = server.ttd();
    let id = subscribe_to(&server, &ttd, &receiver.url("/cli")).await;
    wait_validated(&server, &ttd, id).await;
    for i in 0..3 {
        publish_ok(&server, &ttd, &generic_event(&format!("cli-{i}"))).await;
    }
    let cli = |args: &[&str]| {
        Command::new(BIN)
            .args(["subscriptions", "replay"])
            .args(args)
            .args(["--url", &server.url, "--token", &ttd])
            .output()
            .expect("run hendelse")
    };
    let id_text = id.to_string();
    let out = cli(&[&id_text, "--after", "cli-0", "--key", "cli-key"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(printed["queued"], 2, "{printed}");
    let replay_id = printed["replayId"].as_i64().expect("replayId");
    wait_replayed(&receiver, "/cli", replay_id, &["cli-1", "cli-2"]).await;
    // The same key again is the same replay.
    let out = cli(&[&id_text, "--after", "cli-0", "--key", "cli-key"]);
    let printed: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(printed["repeated"], true, "{printed}");

    // A refusal: non-zero, one line naming the reason.
    let out = cli(&[&id_text, "--from", "yesterday"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("hendelse: ") && err.contains("RFC 3339"),
        "{err}"
    );
    // Neither --from nor --after: the CLI says so itself.
    let out = cli(&[&id_text]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--from") && err.contains("--after"), "{err}");
}

/// A replay cut short by `kill -9` is stored whole or not at all: asked again with its key after
/// the restart, the window is queued exactly once, whichever side of the commit the kill fell on.
async fn a_replay_cut_by_kill_9_is_queued_exactly_once(extra: &[&str]) {
    const EVENTS: usize = 500;
    let mut server = replay_server(&[&["--replay-max-events", "5000"], extra].concat());
    let receiver = Receiver::start().await;
    let ttd = server.ttd();
    let id = subscribe_to(&server, &ttd, &receiver.url("/cut")).await;
    wait_validated(&server, &ttd, id).await;
    let start = now();
    let events: Vec<Value> = (0..EVENTS)
        .map(|i| generic_event(&format!("cut-{i:04}")))
        .collect();
    for chunk in events.chunks(100) {
        crate::common::publish_batch_ok(&server, &ttd, chunk).await;
    }
    // Generous: under a full parallel test run one subscription's 500 deliveries on
    // PostgreSQL can take a while.
    eventually("the live deliveries", PATIENCE * 4, async || {
        let n = receiver.ids_on("/cut").len();
        if n == EVENTS {
            Ok(())
        } else {
            Err(n.to_string())
        }
    })
    .await;

    let body = json!({"from": start});
    let url = server.at(&format!("{SUBSCRIPTIONS}/{id}/replay"));
    let request = client()
        .post(&url)
        .bearer_auth(&ttd)
        .header("Idempotency-Key", "cut")
        .json(&body);
    let first = tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) });
    let delay = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(20, |d| u64::from(d.subsec_nanos() % 80));
    tokio::time::sleep(Duration::from_millis(delay)).await;
    server.kill9();
    let first = first.await.expect("the first request's task");
    server.restart();

    let again = replay_ok(&server, &ttd, id, Some("cut"), &body).await;
    eprintln!("kill -9 {delay} ms into a replay: the first answer {first:?}, then {again}");
    assert_eq!(again["queued"], EVENTS, "{again}");
    if matches!(first, Ok(202)) {
        assert_eq!(again["repeated"], true, "acknowledged, so stored: {again}");
    }
    let replay_id = again["replayId"].as_i64().expect("replayId");
    eventually("the replay to be delivered", PATIENCE * 4, async || {
        let n = replayed(&receiver, "/cut", replay_id).len();
        if n >= EVENTS {
            Ok(())
        } else {
            Err(n.to_string())
        }
    })
    .await;
    tokio::time::sleep(QUIET).await;
    let seen = replayed(&receiver, "/cut", replay_id);
    let distinct: std::collections::BTreeSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), EVENTS, "every event of the window once");
    let replays: std::collections::BTreeSet<String> = receiver
        .deliveries_on("/cut")
        .iter()
        .filter_map(|h| h.header(REPLAY_HEADER).map(str::to_owned))
        .collect();
    assert_eq!(replays.len(), 1, "one replay queued, not two: {replays:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_replay_cut_by_kill_9_is_queued_exactly_once() {
    a_replay_cut_by_kill_9_is_queued_exactly_once(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_replay_cut_by_kill_9_is_queued_exactly_once() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    a_replay_cut_by_kill_9_is_queued_exactly_once(&["--database-url", &db.url]).await;
}
