//! Altinn system users (tokens whose `authorization_details` name one) are principals of their
//! own: they read what is about their owner's party and what the registry grants them by id,
//! nothing else, and their subscriptions' consumer is `/systemuser/{uuid}`.

use serde_json::{Value, json};

use crate::common::{
    ORG_SUBJECT, RESOURCE, Receiver, Server, TO_LOOPBACK, create_subscription, data_path,
    event_about, get, hendelse_ok, page_ids, publish_ok,
};

const SYSTEM_USER: &str = "5d2a8f1c-7b3e-4c9a-9f10-2b6c1e0d4a77";
const OWNER: &str = "991825827";
const GRANTED_ORG: &str = "urn:altinn:organization:identifier-no:912345678";
const OTHER_ORG: &str = "urn:altinn:organization:identifier-no:910000001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_user_reads_its_owners_events_and_what_it_is_granted() {
    // The tests' registry, and a grant to the system user by id for party 50004444.
    let dir = tempfile::tempdir().expect("temp dir");
    let text = std::fs::read_to_string(data_path("registry.json")).expect("registry");
    let mut registry: Value = serde_json::from_str(&text).expect("JSON");
    registry["access"]
        .as_array_mut()
        .expect("access")
        .push(json!({"systemUser": SYSTEM_USER, "party": 50004444, "resources": [RESOURCE]}));
    let path = dir.path().join("registry.json");
    std::fs::write(&path, registry.to_string()).expect("write");
    let path = path.display().to_string();
    let server = Server::start_with(&[&TO_LOOPBACK[..], &["--registry", &path]].concat());
    let ttd = server.ttd();
    let system_user = server.token(&[
        "--system-user",
        SYSTEM_USER,
        "--system-user-org",
        OWNER,
        "--scope",
        "altinn:events.subscribe",
    ]);
    publish_ok(&server, &ttd, &event_about("about-owner", ORG_SUBJECT)).await;
    publish_ok(&server, &ttd, &event_about("about-granted", GRANTED_ORG)).await;
    publish_ok(&server, &ttd, &event_about("about-other", OTHER_ORG)).await;

    let (status, _, page) = get(&server.log_url("&size=100"), &system_user).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page_ids(&page), ["about-owner", "about-granted"], "{page}");

    let receiver = Receiver::start().await;
    let created = create_subscription(
        &server,
        &system_user,
        &json!({"endPoint": receiver.url("/system"), "resourceFilter": RESOURCE, "subjectFilter": ORG_SUBJECT}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(
        created.body["consumer"],
        format!("/systemuser/{SYSTEM_USER}"),
        "{}",
        created.text
    );
    // Not a subject it may read: refused like any other subscriber's.
    let refused = create_subscription(
        &server,
        &system_user,
        &json!({"endPoint": receiver.url("/system"), "resourceFilter": RESOURCE, "subjectFilter": OTHER_ORG}),
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.text);
}

#[test]
fn the_token_command_checks_a_system_user() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().display().to_string();
    let out = std::process::Command::new(crate::common::BIN)
        .args(["token", "--data-dir", &data, "--system-user", "not-a-uuid"])
        .args(["--system-user-org", OWNER])
        .output()
        .expect("run hendelse");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("UUID"));
    let token = hendelse_ok(&[
        "token",
        "--data-dir",
        &data,
        "--system-user",
        SYSTEM_USER,
        "--system-user-org",
        OWNER,
    ]);
    assert_eq!(token.trim().split('.').count(), 3, "{token}");
}
