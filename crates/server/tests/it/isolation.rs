//! Party isolation: a table of users × parties × endpoints (queries, stream, subscriptions,
//! deliveries, dialogs). Every cell inside the registry's access rules (tests/data/registry.json)
//! sees exactly its events; every cell outside yields nothing: an empty page, 403 or 404.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::{RESOURCE, SKD_RESOURCE, SUBSCRIBE, Server, client, follow, publish_ok};
use serde_json::{Value, json};

const ORG_991: &str = "urn:altinn:organization:identifier-no:991825827";
const ORG_912: &str = "urn:altinn:organization:identifier-no:912345678";
const SUBUNIT: &str = "urn:altinn:organization:identifier-no:910000001";
const PERSON_A: &str = "urn:altinn:person:identifier-no:07124912037";
const PERSON_B: &str = "urn:altinn:person:identifier-no:01017012345";

/// (id, resource, subject, publisher)
const EVENTS: [(&str, &str, &str, &str); 6] = [
    ("sss-991", RESOURCE, ORG_991, "ttd"),
    ("sss-a", RESOURCE, PERSON_A, "ttd"),
    ("sss-b", RESOURCE, PERSON_B, "ttd"),
    ("sss-912", RESOURCE, ORG_912, "ttd"),
    ("skd-a", SKD_RESOURCE, PERSON_A, "skd"),
    ("skd-sub", SKD_RESOURCE, SUBUNIT, "skd"),
];

/// Who may read which event, by the registry: an org its own resources, an organisation number
/// its own party, a person their own party and what `access` grants (A reads 991825827's events
/// of super-simple-service, not its subunit's, not of skd-service).
fn may_read(user: &str, id: &str) -> bool {
    matches!(
        (user, id),
        ("ttd", "sss-991" | "sss-a" | "sss-b" | "sss-912")
            | ("skd", "skd-a" | "skd-sub")
            | ("org912", "sss-912")
            | ("a", "sss-991" | "sss-a" | "skd-a")
            | ("b", "sss-b")
    )
}

fn users(server: &Server) -> Vec<(&'static str, String)> {
    vec![
        ("ttd", server.ttd()),
        ("skd", server.skd()),
        (
            "org912",
            server.token(&["--org-number", "912345678", "--scope", SUBSCRIBE]),
        ),
        ("a", server.person()),
        ("b", server.other_person()),
    ]
}

/// Reads a stream from the start until it has been quiet for a second (bounded), returning the
/// event ids, or the status when the stream is refused.
async fn stream_ids(url: &str, token: &str) -> Result<BTreeSet<String>, u16> {
    let mut response = client()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("stream");
    if response.status() != 200 {
        return Err(response.status().as_u16());
    }
    let mut text = String::new();
    for _ in 0..200 {
        match tokio::time::timeout(Duration::from_secs(1), response.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            _ => break,
        }
    }
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect())
}

/// Whether any object in `value` has this numeric `id`.
fn mentions_id(value: &Value, id: i64) -> bool {
    match value {
        Value::Object(map) => {
            map.get("id").and_then(Value::as_i64) == Some(id)
                || map.values().any(|v| mentions_id(v, id))
        }
        Value::Array(items) => items.iter().any(|v| mentions_id(v, id)),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cell_outside_the_access_rules_yields_nothing() {
    let server = Server::start_with(&["--allow-http-webhooks", "--allow-private-webhooks"]);
    let users = users(&server);
    let token_of = |name: &str| {
        users
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t.clone())
            .expect("user")
    };
    for (id, resource, subject, publisher) in EVENTS {
        let event = json!({
            "specversion": "1.0", "id": id, "source": "https://example.com/isolation",
            "type": "no.example.isolation", "resource": resource, "subject": subject
        });
        publish_ok(&server, &token_of(publisher), &event).await;
    }

    let mut cells = 0;
    let mut denied = 0;
    // Queries and the stream, per user × resource.
    for (user, token) in &users {
        for resource in [RESOURCE, SKD_RESOURCE] {
            let expected: BTreeSet<String> = EVENTS
                .iter()
                .filter(|(id, r, _, _)| *r == resource && may_read(user, id))
                .map(|(id, _, _, _)| (*id).to_owned())
                .collect();
            let url = server.at(&format!(
                "/events/api/v1/events?resource={resource}&after=0"
            ));
            let (status, _, body) = common::get(&url, token).await;
            cells += 1;
            if status == 200 {
                let (events, _) = follow(&url, token).await;
                let seen: BTreeSet<String> = events
                    .iter()
                    .map(|e| e["id"].as_str().expect("id").to_owned())
                    .collect();
                assert_eq!(seen, expected, "query: {user} × {resource}");
                if seen.is_empty() {
                    denied += 1;
                }
            } else {
                assert!(
                    matches!(status, 403 | 404) && expected.is_empty(),
                    "query: {user} × {resource}: {status} {body}"
                );
                denied += 1;
            }
            let stream = format!("/events/api/v1/events/stream?resource={resource}&after=0");
            cells += 1;
            match stream_ids(&server.at(&stream), token).await {
                Ok(seen) => {
                    assert_eq!(seen, expected, "stream: {user} × {resource}");
                    if seen.is_empty() {
                        denied += 1;
                    }
                }
                Err(status) => {
                    assert!(
                        matches!(status, 403 | 404) && expected.is_empty(),
                        "stream: {user} × {resource}: {status}"
                    );
                    denied += 1;
                }
            }
        }
        // The app-event query per party: no app events exist, and no one reads another's party.
        for party in [50002598, 50003333, 50001337, 50004444] {
            let url = server.at(&format!("/events/api/v1/app/party?after=0&party={party}"));
            let (status, _, body) = common::get(&url, token).await;
            cells += 1;
            assert!(
                status == 200 && body == json!([]) || matches!(status, 400 | 403 | 404),
                "app/party: {user} × {party}: {status} {body}"
            );
            denied += 1;
        }
    }

    // Subscriptions: a subject filter the user may not read is refused with 403.
    let mut subscription_of_ttd = None;
    for (user, token) in &users {
        for (id, resource, subject, _) in EVENTS {
            let body = json!({
                "endPoint": "http://127.0.0.1:9/hook",
                "resourceFilter": resource,
                "subjectFilter": subject,
            });
            let r = client()
                .post(server.at("/events/api/v1/subscriptions"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("create");
            let status = r.status().as_u16();
            let reply: Value = r.json().await.unwrap_or(Value::Null);
            cells += 1;
            if may_read(user, id) {
                assert_eq!(status, 201, "subscribe: {user} × {id}: {reply}");
                if *user == "ttd" {
                    subscription_of_ttd = reply["id"].as_i64();
                }
            } else {
                assert_eq!(status, 403, "subscribe: {user} × {id}: {reply}");
                denied += 1;
            }
        }
    }
    // Another consumer's subscription and its deliveries are not found.
    let theirs = subscription_of_ttd.expect("ttd subscribed");
    let (_, _, own) =
        common::get(&server.at("/events/api/v1/subscriptions"), &token_of("ttd")).await;
    assert!(
        mentions_id(&own, theirs),
        "ttd does not list its own: {own}"
    );
    for (user, token) in users.iter().filter(|(u, _)| *u != "ttd") {
        for path in [
            format!("/events/api/v1/subscriptions/{theirs}"),
            format!("/events/api/v1/subscriptions/{theirs}/deliveries"),
        ] {
            let (status, _, body) = common::get(&server.at(&path), token).await;
            cells += 1;
            assert!(
                matches!(status, 403 | 404),
                "{user} GET {path}: {status} {body}"
            );
            denied += 1;
        }
        let (status, _, body) =
            common::get(&server.at("/events/api/v1/subscriptions"), token).await;
        cells += 1;
        let listed = mentions_id(&body, theirs);
        assert!(
            !listed || status != 200,
            "{user} lists ttd's subscription: {body}"
        );
        denied += 1;
    }

    // Dialogs: ttd creates one for 991825827 and one for person B; the end-user API shows each
    // only to who may read that party's events of the resource.
    let mut dialogs = Vec::new();
    for party in [
        "urn:altinn:organization:identifier-no::991825827",
        "urn:altinn:person:identifier-no::01017012345",
    ] {
        let r = client()
            .post(server.at("/dialogporten/api/v1/serviceowner/dialogs"))
            .bearer_auth(token_of("ttd"))
            .json(&json!({
                "serviceResource": RESOURCE, "party": party,
                "process": "urn:some:process:id",
                "precedingProcess": "urn:some:preceding:process:id"
            }))
            .send()
            .await
            .expect("create dialog");
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 201, "{body}");
        // The answer is the new dialog's id as a JSON string.
        dialogs.push(body.as_str().expect("dialog id").to_owned());
    }
    let may_see_dialog = |user: &str, which: usize| matches!((user, which), ("a", 0) | ("b", 1));
    for (user, token) in users.iter().filter(|(u, _)| *u != "ttd") {
        let (status, _, body) =
            common::get(&server.at("/dialogporten/api/v1/enduser/dialogs"), token).await;
        let listed = |id: &str| status == 200 && body.to_string().contains(id);
        for (which, id) in dialogs.iter().enumerate() {
            cells += 2;
            let (one, _, one_body) = common::get(
                &server.at(&format!("/dialogporten/api/v1/enduser/dialogs/{id}")),
                token,
            )
            .await;
            if may_see_dialog(user, which) {
                assert!(listed(id), "{user} does not list dialog {which}: {body}");
                assert_eq!(one, 200, "{user} GET dialog {which}: {one_body}");
            } else {
                assert!(!listed(id), "{user} lists dialog {which}: {body}");
                assert!(
                    matches!(one, 401 | 403 | 404),
                    "{user} GET dialog {which}: {one} {one_body}"
                );
                denied += 2;
            }
        }
    }
    eprintln!(
        "isolation: {} users, {cells} cells checked, {denied} outside the access rules yielded nothing",
        users.len()
    );
}
