//! `--config FILE` through the binary: settings from TOML, flags win, bad files fail clearly.

use std::process::Command;

use crate::common::{BIN, Server, generic_event, get, publish_ok};

#[tokio::test]
async fn a_config_file_sets_what_flags_do_not() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("hendelse.toml");
    std::fs::write(
        &file,
        "# Settings for tests\npublic_url = \"https://events.example\"\nretention-days = 30\n\
         listen = \"127.0.0.1:1\"\n",
    )
    .expect("write");
    let path = file.to_string_lossy().into_owned();
    // `--listen 127.0.0.1:0` from the harness comes after the file's and wins.
    let server = Server::start_with(&["--config", &path]);
    let token = server.ttd();
    publish_ok(&server, &token, &generic_event("c1")).await;
    let (status, next, _) = get(&server.log_url(""), &token).await;
    assert_eq!(status, 200);
    let next = next.expect("next");
    assert!(
        next.starts_with("https://events.example/events/api/v1/events?"),
        "{next}"
    );
}

#[test]
fn a_bad_config_file_is_a_one_line_error() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("bad.toml");
    for (content, says) in [
        (
            "lisen = \"127.0.0.1:0\"\n",
            "'lisen' is not a setting of `serve`",
        ),
        ("listen = [1, 2]\n", "must be a string, number or boolean"),
        ("listen = \n", "is not valid TOML"),
    ] {
        std::fs::write(&file, content).expect("write");
        let out = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&file)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{content}");
        assert!(stderr.contains(says), "{content}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}

/// A setting out of range stops the start with one line naming it, before the data directory (the
/// store, the signing key) is touched; nothing is clamped silently.
#[test]
fn a_wrong_setting_stops_the_start_before_anything_is_opened() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    for (args, says) in [
        (&["--webhook-timeout", "0"][..], "--webhook-timeout"),
        (&["--push-concurrency", "0"][..], "--push-concurrency"),
        (
            &["--push-per-subscription", "0"][..],
            "--push-per-subscription",
        ),
        (
            &["--push-concurrency", "4", "--push-per-subscription", "5"][..],
            "--push-per-subscription (5) cannot exceed --push-concurrency (4)",
        ),
        (&["--ingest-queue", "0"][..], "--ingest-queue"),
        (&["--retention-interval", "0"][..], "--retention-interval"),
        (&["--retention-days=-1"][..], "--retention-days"),
        (&["--retention-days", "0"][..], "--retention-days"),
        (
            &["--dialog-source-base", "not a url"][..],
            "--dialog-source-base",
        ),
        (
            &["--dialog-events-url", "ftp://x.example"][..],
            "--dialog-events-url",
        ),
        (&["--public-url", "events.example"][..], "--public-url"),
    ] {
        let out = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .args(args)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!data.exists(), "{args:?}: the data directory was touched");
    }
}
