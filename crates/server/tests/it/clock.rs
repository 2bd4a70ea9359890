//! The server's clock steps back an hour mid-run and forward again (libfaketime from Debian's
//! packages, its offset read from a file the test rewrites): registration times stay monotonic
//! per store, so `from`/`to` windows stay complete, a cursor follower never skips, and retention
//! sweeps (every second here) delete nothing. On SQLite and PostgreSQL.

use std::path::Path;
use std::time::Duration;

use hendelse_store::testing::{TestDatabase, skip_outside_ci};
use serde_json::Value;

use crate::common::{
    PUBLISH, SUBSCRIBE, Server, event_ids, follow, generic_event, get, publish_app,
    publish_batch_ok,
};

const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

fn batch(prefix: &str) -> Vec<Value> {
    (0..10)
        .map(|i| generic_event(&format!("{prefix}-{i}")))
        .collect()
}

/// How far the server's clock is from ours: an app event gets its `time` from the server's
/// clock (the `Date` header would not do: hyper keeps the last one until its clock passes the
/// next second, which a clock stepped back does not for an hour).
async fn server_clock_offset(server: &Server, token: &str) -> i64 {
    let event = serde_json::json!({
        "specversion": "1.0", "type": "app.instance.created", "subject": "/party/50002598",
        "source": "https://ttd.apps.altinn.no/ttd/clock/instances/50002598/3ebaa1a2-9113-4905-ab26-a84fc3ec8acc"
    });
    let response = publish_app(server, token, &event).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let (status, _, stored) = get(&server.at(&location), token).await;
    assert_eq!(status, 200, "{stored}");
    let time = stored["time"].as_str().expect("time");
    let theirs = chrono::DateTime::parse_from_rfc3339(time).expect("RFC 3339");
    theirs.timestamp() - chrono::Utc::now().timestamp()
}

async fn the_clock_steps_back_and_forward(extra: &[&str]) {
    if !Path::new(FAKETIME).exists() {
        skip_outside_ci(
            "the clock test",
            &format!("{FAKETIME} is missing (Debian's libfaketime)"),
        );
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let offset = dir.path().join("faketime");
    std::fs::write(&offset, "+0\n").expect("write");
    let offset_file = offset.display().to_string();
    let server = Server::start_with_env(
        &[&["--retention-interval", "1"], extra].concat(),
        &[
            ("LD_PRELOAD", FAKETIME),
            ("FAKETIME_TIMESTAMP_FILE", &offset_file),
            ("FAKETIME_NO_CACHE", "1"),
            // Timers and timeouts keep their pace: only the wall clock steps.
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    // Valid on both sides of the step.
    let token = server.token(&[
        "--org",
        "ttd",
        "--scope",
        &format!("{PUBLISH} {SUBSCRIBE}"),
        "--not-before",
        "-7200",
        "--ttl",
        "7200",
    ]);
    let started = chrono::Utc::now() - chrono::Duration::seconds(2);
    publish_batch_ok(&server, &token, &batch("before")).await;
    let (seen, follower) = follow(&server.log_url("&size=100"), &token).await;
    assert_eq!(seen.len(), 10);

    std::fs::write(&offset, "-1h\n").expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let behind = server_clock_offset(&server, &token).await;
    assert!(
        (-3700..=-3500).contains(&behind),
        "the server's clock did not step back: {behind} s"
    );
    publish_batch_ok(&server, &token, &batch("back")).await;
    std::fs::write(&offset, "+0\n").expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    publish_batch_ok(&server, &token, &batch("again")).await;
    // Retention sweeps run every second meanwhile.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let expected: Vec<String> = ["before", "back", "again"]
        .iter()
        .flat_map(|p| (0..10).map(move |i| format!("{p}-{i}")))
        .collect();
    let (all, _) = follow(&server.log_url("&size=7"), &token).await;
    assert_eq!(event_ids(&all), expected, "the log, from the start");
    let (rest, _) = follow(&follower, &token).await;
    assert_eq!(
        event_ids(&rest),
        expected[10..].to_vec(),
        "the follower's next skips nothing"
    );
    let window = format!(
        "&size=100&from={}&to={}",
        started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        (chrono::Utc::now() + chrono::Duration::minutes(5))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
    .replace('+', "%2B");
    let (windowed, _) = follow(&server.log_url(&window), &token).await;
    assert_eq!(
        event_ids(&windowed),
        expected,
        "a from/to window across the step"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_clock_that_steps_back_loses_and_skips_nothing() {
    the_clock_steps_back_and_forward(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_clock_that_steps_back_loses_and_skips_nothing() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    the_clock_steps_back_and_forward(&["--database-url", &db.url]).await;
}
