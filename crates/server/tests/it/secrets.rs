//! Webhook secrets at rest: sealed with the operator's key, so that the store's files and a dump
//! of the database hold no usable secret; keys rotate (a new key first in the key file, the old
//! one after it, and the server seals every secret again at start); a start without the key that
//! sealed them, or on PostgreSQL without keys at all, fails with one line.

use std::path::Path;
use std::process::Command;

use base64::Engine;
use hendelse_store::testing::TestDatabase;
use serde_json::json;

use crate::common::{
    BIN, PATIENCE, RESOURCE, Receiver, Server, TO_LOOPBACK, create_subscription, data_path,
    generic_event, id_of, publish_ok, random_bytes, secret_of, verifies, wait_validated,
};

fn key() -> String {
    base64::engine::general_purpose::STANDARD.encode(random_bytes(32))
}

/// Every byte of the files of the embedded store (database, WAL, shared memory).
fn store_bytes(data: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(data).expect("data dir").flatten() {
        if entry.file_name().to_string_lossy().starts_with("events.db") {
            all.extend(std::fs::read(entry.path()).expect("store file"));
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_holds_no_usable_secret_and_keys_rotate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first_key = dir.path().join("first.keys");
    std::fs::write(&first_key, format!("{}\n", key())).expect("key file");
    let first_key_arg = first_key.to_str().expect("path");
    let mut server =
        Server::start_with(&[&TO_LOOPBACK[..], &["--secret-key-file", first_key_arg]].concat());
    let receiver = Receiver::start().await;
    let ttd = server.ttd();
    let secret = secret_of(32);
    let created = create_subscription(
        &server,
        &ttd,
        &json!({"endPoint": receiver.url("/sealed"), "resourceFilter": RESOURCE, "secret": secret}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = id_of(&created.body);
    wait_validated(&server, &ttd, id).await;
    publish_ok(&server, &ttd, &generic_event("sealed-1")).await;
    assert!(verifies(
        &secret,
        &receiver.delivered("/sealed", "sealed-1").await
    ));

    // Neither the secret nor its key bytes are anywhere in the store's files.
    let bytes = store_bytes(server.data_dir());
    let encoded = secret.trim_start_matches("whsec_");
    assert!(!contains(&bytes, encoded), "the secret is in the store");
    assert!(contains(&bytes, "enc1:"), "sealed secrets are in the store");
    assert!(!server.log().contains(encoded), "the secret is in the log");

    // Rotation: a new key first, the old one after it; the server seals everything again.
    let rotated = dir.path().join("rotated.keys");
    let new_key = key();
    let old_keys = std::fs::read_to_string(&first_key).expect("keys");
    std::fs::write(&rotated, format!("{new_key}\n{old_keys}")).expect("key file");
    let rotated_arg = rotated.to_str().expect("path");
    server.restart_with(&[&TO_LOOPBACK[..], &["--secret-key-file", rotated_arg]].concat());
    server
        .wait_for_log("webhook secrets sealed with the current key", PATIENCE)
        .await;
    publish_ok(&server, &ttd, &generic_event("sealed-2")).await;
    assert!(verifies(
        &secret,
        &receiver.delivered("/sealed", "sealed-2").await
    ));

    // The old key can go: the new one alone opens everything.
    let only_new = dir.path().join("new.keys");
    std::fs::write(&only_new, format!("{new_key}\n")).expect("key file");
    let only_new_arg = only_new.to_str().expect("path");
    server.restart_with(&[&TO_LOOPBACK[..], &["--secret-key-file", only_new_arg]].concat());
    publish_ok(&server, &ttd, &generic_event("sealed-3")).await;
    assert!(verifies(
        &secret,
        &receiver.delivered("/sealed", "sealed-3").await
    ));
    server.kill9();

    // Without the key that sealed them, the server does not start, and says why in one line.
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(server.data_dir())
        .arg("--registry")
        .arg(data_path("registry.json"))
        .args(["--secret-key-file", first_key_arg])
        .env_remove("HENDELSE_SECRET_KEY")
        .output()
        .expect("run hendelse serve");
    assert!(!out.status.success(), "started without the key");
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("hendelse: ") && last.contains("not among the secret keys given"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_of_its_own_makes_its_key_beside_the_data() {
    let server = Server::start_with(&TO_LOOPBACK);
    let receiver = Receiver::start().await;
    let ttd = server.ttd();
    let secret = secret_of(32);
    let created = create_subscription(
        &server,
        &ttd,
        &json!({"endPoint": receiver.url("/own"), "resourceFilter": RESOURCE, "secret": secret}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let keys = server.data_dir().join("secret-keys");
    let text = std::fs::read_to_string(&keys).expect("the key file");
    assert!(
        text.lines().any(|l| !l.starts_with('#') && l.len() == 44),
        "{text}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&keys).expect("meta").permissions().mode();
        assert_eq!(mode & 0o077, 0, "readable by its owner only: {mode:o}");
    }
    let bytes = store_bytes(server.data_dir());
    assert!(!contains(&bytes, secret.trim_start_matches("whsec_")));
    wait_validated(&server, &ttd, id_of(&created.body)).await;
    publish_ok(&server, &ttd, &generic_event("own-1")).await;
    assert!(verifies(
        &secret,
        &receiver.delivered("/own", "own-1").await
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_holds_sealed_secrets_and_needs_its_keys_given() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let server = Server::start_with(&[&TO_LOOPBACK[..], &["--database-url", &db.url]].concat());
    let ttd = server.ttd();
    let secret = secret_of(32);
    let created = create_subscription(
        &server,
        &ttd,
        &json!({"endPoint": "http://127.0.0.1:9/x", "resourceFilter": RESOURCE, "secret": secret}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    // What a dump of the database holds.
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let stored: Vec<(Option<String>,)> = sqlx::query_as("SELECT secret FROM subscriptions")
        .fetch_all(&pool)
        .await
        .expect("select");
    assert_eq!(stored.len(), 1);
    let sealed = stored[0].0.as_deref().expect("a secret");
    assert!(sealed.starts_with("enc1:"), "{sealed}");
    assert!(!sealed.contains(secret.trim_start_matches("whsec_")));
    pool.close().await;

    // Without keys a node on PostgreSQL does not start.
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(server.data_dir())
        .arg("--registry")
        .arg(data_path("registry.json"))
        .args(["--database-url", &db.url])
        .env_remove("HENDELSE_SECRET_KEY")
        .env_remove("HENDELSE_SECRET_KEY_FILE")
        .output()
        .expect("run hendelse serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--secret-key-file"), "{err}");
}
