//! The dialog service through HTTP: every row of the table of operations and the events
//! they publish (exact sequences, read back from the event store), every CloudEvent attribute
//! against Dialogporten's examples, seen once per user and change also under concurrent reads,
//! revisions (If-Match, 412), 410 on deleted dialogs, silent updates, authorization, and the
//! events reaching the event store in process or through a remote Events API.
//!
//! The forwarder publishes asynchronously: waits are bounded polls. To show that something
//! published nothing, a later change of a marker dialog is awaited: the outbox is forwarded in
//! order, so once the marker's event is in the store, everything written before it is too.

use crate::common;

use std::time::Duration;

use crate::common::{
    Answer, PERSON, PUBLISH, RESOURCE, SUBSCRIBE, Server, client, eventually, free_port,
    resource_log, token_for,
};
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Value, json};

const SO: &str = "/dialogporten/api/v1/serviceowner/dialogs";
const EU: &str = "/dialogporten/api/v1/enduser/dialogs";
/// The party as Dialogporten's examples write it.
const PARTY: &str = "urn:altinn:organization:identifier-no::991825827";
const BASE: &str = "https://platform.altinn.no/dialogporten";
const PROCESS: &str = "urn:some:process:id";
const PRECEDING: &str = "urn:some:preceding:process:id";

const CREATED: &str = "dialogporten.dialog.created.v1";
const UPDATED: &str = "dialogporten.dialog.updated.v1";
const DELETED: &str = "dialogporten.dialog.deleted.v1";
const RESTORED: &str = "dialogporten.dialog.restored.v1";
const SEEN: &str = "dialogporten.dialog.seen.v1";
const TRANSMISSION: &str = "dialogporten.dialog.transmission.created.v1";

/// What the dialog routes answer besides a status and a body.
trait DialogAnswer {
    fn etag(&self) -> String;
    /// The id a creation answers with.
    fn id(&self) -> String;
}

impl DialogAnswer for Answer {
    fn etag(&self) -> String {
        self.header("etag")
            .unwrap_or_else(|| panic!("no ETag: {} {}", self.status, self.body))
            .to_owned()
    }

    fn id(&self) -> String {
        self.body
            .as_str()
            .unwrap_or_else(|| panic!("no id: {} {}", self.status, self.body))
            .to_owned()
    }
}

async fn send(
    server: &Server,
    method: Method,
    path: &str,
    token: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = client().request(method, server.at(path)).bearer_auth(token);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    common::send(request).await
}

fn dialog(extra: Value) -> Value {
    let mut body = json!({
        "serviceResource": RESOURCE,
        "party": PARTY,
        "process": PROCESS,
        "precedingProcess": PRECEDING,
    });
    if let (Some(map), Value::Object(extra)) = (body.as_object_mut(), extra) {
        map.extend(extra);
    }
    body
}

async fn create(server: &Server, token: &str, body: &Value) -> Answer {
    let reply = send(server, Method::POST, SO, token, Some(body), &[]).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    reply
}

fn of_dialog(events: &[Value], id: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["resourceinstance"] == id)
        .cloned()
        .collect()
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Asserts that the dialog's events are exactly `expected`, waiting (bounded) for as many to
/// arrive.
async fn expect_types(server: &Server, token: &str, id: &str, expected: &[&str]) -> Vec<Value> {
    let events = eventually(
        &format!("{} events of dialog {id}", expected.len()),
        Duration::from_secs(15),
        async || {
            let events = of_dialog(&resource_log(server, token).await, id);
            if events.len() >= expected.len() {
                Ok(events)
            } else {
                Err(format!("{:?}", types(&events)))
            }
        },
    )
    .await;
    assert_eq!(types(&events), expected, "events of dialog {id}");
    events
}

/// Lets everything written so far reach the store: creates a marker dialog and waits for its
/// event.
async fn settle(server: &Server, token: &str) {
    let marker = create(server, token, &dialog(json!({}))).await.id();
    expect_types(server, token, &marker, &[CREATED]).await;
}

fn activity_type(suffix: &str) -> String {
    format!("dialogporten.dialog.activity.{suffix}.v1")
}

#[tokio::test]
async fn create_publishes_created_then_each_activity_then_each_transmission() {
    let server = Server::start();
    let ttd = server.ttd();
    let body = dialog(json!({
        "activities": [
            {"type": "DialogCreated"},
            {"type": "SignatureProvided", "extendedType": "urn:x:additional-info-received"},
            {"type": "payment-made"}
        ],
        "transmissions": [
            {"type": "Information", "sender": {"actorType": "ServiceOwner"}},
            {"type": "Submission", "sender": {"actorType": "PartyRepresentative"}}
        ]
    }));
    let id = create(&server, &ttd, &body).await.id();
    let events = expect_types(
        &server,
        &ttd,
        &id,
        &[
            CREATED,
            &activity_type("created"),
            &activity_type("signature-provided"),
            &activity_type("payment-made"),
            TRANSMISSION,
            TRANSMISSION,
        ],
    )
    .await;
    let senders: Vec<&Value> = events[4..]
        .iter()
        .map(|e| &e["data"]["senderType"])
        .collect();
    assert_eq!(
        senders,
        [&json!("ServiceOwner"), &json!("PartyRepresentative")]
    );

    // The dialog as stored has them all, and its ETag is its revision.
    let got = send(&server, Method::GET, &format!("{SO}/{id}"), &ttd, None, &[]).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(
        got.etag(),
        format!("\"{}\"", got.body["revision"].as_str().expect("revision"))
    );
    assert_eq!(got.body["activities"].as_array().map(Vec::len), Some(3));
    assert_eq!(got.body["transmissions"].as_array().map(Vec::len), Some(2));
    assert_eq!(got.body["status"], "New");
}

#[tokio::test]
async fn every_activity_type_maps_to_its_event_type() {
    let server = Server::start();
    let ttd = server.ttd();
    let names = [
        ("DialogCreated", "created"),
        ("DialogClosed", "closed"),
        ("Information", "information"),
        ("TransmissionOpened", "transmission-opened"),
        ("PaymentMade", "payment-made"),
        ("SignatureProvided", "signature-provided"),
        ("DialogOpened", "dialog-opened"),
        ("DialogDeleted", "dialog-deleted"),
        ("DialogRestored", "dialog-restored"),
        ("SentToSigning", "sent-to-signing"),
        ("SentToFormFill", "sent-to-form-fill"),
        ("SentToSendIn", "sent-to-send-in"),
        ("SentToPayment", "sent-to-payment"),
        ("FormSubmitted", "form-submitted"),
        ("FormSaved", "form-saved"),
        ("CorrespondenceOpened", "correspondence-opened"),
        ("CorrespondenceConfirmed", "correspondence-confirmed"),
    ];
    let activities: Vec<Value> = names.iter().map(|(n, _)| json!({"type": n})).collect();
    let id = create(&server, &ttd, &dialog(json!({"activities": activities})))
        .await
        .id();
    let mut expected = vec![CREATED.to_owned()];
    expected.extend(names.iter().map(|(_, suffix)| activity_type(suffix)));
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    expect_types(&server, &ttd, &id, &expected).await;
}

#[tokio::test]
async fn updates_publish_updated_and_one_event_per_new_activity_or_transmission() {
    let server = Server::start();
    let ttd = server.ttd();
    let id = create(&server, &ttd, &dialog(json!({}))).await.id();
    let path = format!("{SO}/{id}");

    // Plain fields, by PUT.
    let put = send(
        &server,
        Method::PUT,
        &path,
        &ttd,
        Some(&dialog(json!({"status": "InProgress", "progress": 50}))),
        &[],
    )
    .await;
    assert_eq!(put.status, 204, "{}", put.body);
    // Plain fields, by JSON Patch.
    let patch = json!([{"op": "replace", "path": "/status", "value": "RequiresAttention"}]);
    let patched = send(&server, Method::PATCH, &path, &ttd, Some(&patch), &[]).await;
    assert_eq!(patched.status, 204, "{}", patched.body);
    expect_types(&server, &ttd, &id, &[CREATED, UPDATED, UPDATED]).await;

    // PUT adding an activity and a transmission (PUT lists only new ones, as Dialogporten's).
    let put = send(
        &server,
        Method::PUT,
        &path,
        &ttd,
        Some(&dialog(json!({
            "status": "InProgress",
            "activities": [{"type": "FormSaved"}],
            "transmissions": [{"type": "Request"}]
        }))),
        &[],
    )
    .await;
    assert_eq!(put.status, 204, "{}", put.body);
    // JSON Patch adding an activity to the dialog as GET shows it.
    let patch = json!([{"op": "add", "path": "/activities/-", "value": {"type": "FormSubmitted"}}]);
    let patched = send(&server, Method::PATCH, &path, &ttd, Some(&patch), &[]).await;
    assert_eq!(patched.status, 204, "{}", patched.body);
    // POST of one activity and of one transmission.
    let activity = send(
        &server,
        Method::POST,
        &format!("{path}/activities"),
        &ttd,
        Some(&json!({"type": "DialogClosed"})),
        &[],
    )
    .await;
    assert_eq!(activity.status, 201, "{}", activity.body);
    let location = activity.headers["location"].to_str().expect("location");
    assert_eq!(location, format!("{path}/activities/{}", activity.id()));
    let transmission = send(
        &server,
        Method::POST,
        &format!("{path}/transmissions"),
        &ttd,
        Some(&json!({"type": "Alert", "sender": {"actorType": "ServiceOwner"}})),
        &[],
    )
    .await;
    assert_eq!(transmission.status, 201, "{}", transmission.body);
    expect_types(
        &server,
        &ttd,
        &id,
        &[
            CREATED,
            UPDATED,
            UPDATED,
            UPDATED,
            &activity_type("form-saved"),
            TRANSMISSION,
            UPDATED,
            &activity_type("form-submitted"),
            UPDATED,
            &activity_type("closed"),
            UPDATED,
            TRANSMISSION,
        ],
    )
    .await;
    let got = send(&server, Method::GET, &path, &ttd, None, &[]).await;
    assert_eq!(got.body["status"], "InProgress");
    assert_eq!(got.body["progress"], Value::Null, "PUT replaces the fields");
    assert_eq!(got.body["activities"].as_array().map(Vec::len), Some(3));
    assert_eq!(got.body["transmissions"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn delete_restore_and_purge() {
    let server = Server::start();
    let ttd = server.ttd();

    // Soft delete, restore, delete again, then purge the deleted dialog: nothing for the purge.
    let id = create(&server, &ttd, &dialog(json!({}))).await.id();
    let path = format!("{SO}/{id}");
    let deleted = send(&server, Method::DELETE, &path, &ttd, None, &[]).await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    let got = send(&server, Method::GET, &path, &ttd, None, &[]).await;
    assert_eq!(
        got.status, 200,
        "the service owner still sees a deleted dialog"
    );
    assert!(got.body["deletedAt"].is_string());
    let restored = send(
        &server,
        Method::POST,
        &format!("{path}/actions/restore"),
        &ttd,
        None,
        &[],
    )
    .await;
    assert_eq!(restored.status, 204, "{}", restored.body);
    let again = send(&server, Method::DELETE, &path, &ttd, None, &[]).await;
    assert_eq!(again.status, 204, "{}", again.body);
    let purged = send(
        &server,
        Method::POST,
        &format!("{path}/actions/purge"),
        &ttd,
        None,
        &[],
    )
    .await;
    assert_eq!(purged.status, 204, "{}", purged.body);
    let gone = send(&server, Method::GET, &path, &ttd, None, &[]).await;
    assert_eq!(gone.status, 404, "purged for good");

    // Purge of a live dialog: deleted.
    let live = create(&server, &ttd, &dialog(json!({}))).await.id();
    let purged = send(
        &server,
        Method::POST,
        &format!("{SO}/{live}/actions/purge"),
        &ttd,
        None,
        &[],
    )
    .await;
    assert_eq!(purged.status, 204, "{}", purged.body);

    settle(&server, &ttd).await;
    expect_types(&server, &ttd, &id, &[CREATED, DELETED, RESTORED, DELETED]).await;
    expect_types(&server, &ttd, &live, &[CREATED, DELETED]).await;
}

#[tokio::test]
async fn changes_to_a_deleted_dialog_are_gone() {
    let server = Server::start();
    let ttd = server.ttd();
    let me = server.person();
    let id = create(&server, &ttd, &dialog(json!({}))).await.id();
    let path = format!("{SO}/{id}");
    assert_eq!(
        send(&server, Method::DELETE, &path, &ttd, None, &[])
            .await
            .status,
        204
    );
    let patch = json!([{"op": "replace", "path": "/status", "value": "Completed"}]);
    let attempts = [
        send(
            &server,
            Method::PUT,
            &path,
            &ttd,
            Some(&dialog(json!({}))),
            &[],
        )
        .await,
        send(&server, Method::PATCH, &path, &ttd, Some(&patch), &[]).await,
        send(&server, Method::DELETE, &path, &ttd, None, &[]).await,
        send(
            &server,
            Method::POST,
            &format!("{path}/activities"),
            &ttd,
            Some(&json!({"type": "Information"})),
            &[],
        )
        .await,
        send(
            &server,
            Method::POST,
            &format!("{path}/transmissions"),
            &ttd,
            Some(&json!({"type": "Information"})),
            &[],
        )
        .await,
        send(&server, Method::GET, &format!("{EU}/{id}"), &me, None, &[]).await,
    ];
    for reply in &attempts {
        assert_eq!(reply.status, 410, "{}", reply.body);
        assert_eq!(
            reply.headers["content-type"], "application/problem+json",
            "{}",
            reply.body
        );
        assert_eq!(reply.body["status"], 410);
    }
    settle(&server, &ttd).await;
    expect_types(&server, &ttd, &id, &[CREATED, DELETED]).await;
}

#[tokio::test]
async fn if_match_with_a_stale_revision_is_412() {
    let server = Server::start();
    let ttd = server.ttd();
    let created = create(&server, &ttd, &dialog(json!({}))).await;
    let id = created.id();
    let first = created.etag();
    let path = format!("{SO}/{id}");

    let put = send(
        &server,
        Method::PUT,
        &path,
        &ttd,
        Some(&dialog(json!({"status": "Draft"}))),
        &[("if-match", &first)],
    )
    .await;
    assert_eq!(put.status, 204, "{}", put.body);
    let second = put.etag();
    assert_ne!(first, second, "every change sets a new revision");

    let patch = json!([{"op": "replace", "path": "/status", "value": "Sent"}]);
    for (method, sub, body) in [
        (Method::PUT, "", Some(dialog(json!({})))),
        (Method::PATCH, "", Some(patch.clone())),
        (Method::DELETE, "", None),
        (
            Method::POST,
            "/activities",
            Some(json!({"type": "Information"})),
        ),
        (
            Method::POST,
            "/transmissions",
            Some(json!({"type": "Information"})),
        ),
        (Method::POST, "/actions/restore", None),
        (Method::POST, "/actions/purge", None),
    ] {
        let stale = send(
            &server,
            method.clone(),
            &format!("{path}{sub}"),
            &ttd,
            body.as_ref(),
            &[("if-match", &first)],
        )
        .await;
        assert_eq!(stale.status, 412, "{method} {sub}: {}", stale.body);
        assert_eq!(stale.headers["content-type"], "application/problem+json");
    }
    let current = send(
        &server,
        Method::PATCH,
        &path,
        &ttd,
        Some(&patch),
        &[("if-match", &second)],
    )
    .await;
    assert_eq!(current.status, 204, "{}", current.body);
    let got = send(&server, Method::GET, &path, &ttd, None, &[]).await;
    assert_eq!(got.etag(), current.etag());
    assert_eq!(got.body["status"], "Sent");
    // A JSON Patch `test` of the revision is a precondition too (400: the patch fails).
    let tested = send(
        &server,
        Method::PATCH,
        &path,
        &ttd,
        Some(&json!([
            {"op": "test", "path": "/revision", "value": second.trim_matches('"')},
            {"op": "replace", "path": "/status", "value": "Completed"}
        ])),
        &[],
    )
    .await;
    assert_eq!(tested.status, 400, "{}", tested.body);

    settle(&server, &ttd).await;
    expect_types(&server, &ttd, &id, &[CREATED, UPDATED, UPDATED]).await;
}

#[tokio::test]
async fn a_user_sees_a_change_once_however_often_they_read_it() {
    let server = Server::start();
    let ttd = server.ttd();
    let me = server.person();
    let id = create(&server, &ttd, &dialog(json!({}))).await.id();
    let path = format!("{EU}/{id}");

    let first = send(&server, Method::GET, &path, &me, None, &[]).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let second = send(&server, Method::GET, &path, &me, None, &[]).await;
    assert_eq!(second.status, 200, "{}", second.body);
    let seen = second.body["seenSinceLastUpdate"]
        .as_array()
        .expect("seen log");
    assert_eq!(seen.len(), 1, "{}", second.body);
    assert_eq!(seen[0]["isCurrentEndUser"], true);
    assert_eq!(
        seen[0]["seenBy"]["actorId"],
        format!("urn:altinn:person:identifier-no:{PERSON}")
    );
    // The seen event's id is the seen-log entry's.
    let events = expect_types(&server, &ttd, &id, &[CREATED, UPDATED, SEEN]).await;
    assert_eq!(events[2]["id"], seen[0]["id"]);

    // After a change, the next read is seen again, once.
    let changed = send(
        &server,
        Method::POST,
        &format!("{SO}/{id}/activities"),
        &ttd,
        Some(&json!({"type": "Information"})),
        &[],
    )
    .await;
    assert_eq!(changed.status, 201, "{}", changed.body);
    for _ in 0..2 {
        assert_eq!(
            send(&server, Method::GET, &path, &me, None, &[])
                .await
                .status,
            200
        );
    }
    settle(&server, &ttd).await;
    expect_types(
        &server,
        &ttd,
        &id,
        &[
            CREATED,
            UPDATED,
            SEEN,
            UPDATED,
            &activity_type("information"),
            UPDATED,
            SEEN,
        ],
    )
    .await;
    // The service owner sees who has seen the latest change.
    let owner_view = send(&server, Method::GET, &format!("{SO}/{id}"), &ttd, None, &[]).await;
    assert_eq!(
        owner_view.body["seenSinceLastUpdate"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn eight_concurrent_reads_are_seen_once() {
    let server = Server::start();
    let ttd = server.ttd();
    let me = server.person();
    let id = create(&server, &ttd, &dialog(json!({}))).await.id();
    let url = server.at(&format!("{EU}/{id}"));
    let reads: Vec<_> = (0..8)
        .map(|_| {
            let (url, me) = (url.clone(), me.clone());
            tokio::spawn(async move {
                client()
                    .get(&url)
                    .bearer_auth(&me)
                    .send()
                    .await
                    .expect("read")
                    .status()
                    .as_u16()
            })
        })
        .collect();
    for read in reads {
        assert_eq!(read.await.expect("task"), 200);
    }
    settle(&server, &ttd).await;
    expect_types(&server, &ttd, &id, &[CREATED, UPDATED, SEEN]).await;
}

#[tokio::test]
async fn silent_updates_publish_nothing() {
    let server = Server::start();
    let ttd = server.ttd();
    let me = server.person();
    let silent = "?isSilentUpdate=true";

    let created = send(
        &server,
        Method::POST,
        &format!("{SO}{silent}"),
        &ttd,
        Some(&dialog(json!({"activities": [{"type": "Information"}]}))),
        &[],
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.id();
    let path = format!("{SO}/{id}");
    let patch = json!([{"op": "replace", "path": "/status", "value": "Completed"}]);
    let steps = [
        (Method::PUT, String::new(), Some(dialog(json!({})))),
        (Method::PATCH, String::new(), Some(patch)),
        (
            Method::POST,
            "/activities".to_owned(),
            Some(json!({"type": "Information"})),
        ),
        (
            Method::POST,
            "/transmissions".to_owned(),
            Some(json!({"type": "Information"})),
        ),
        (Method::DELETE, String::new(), None),
        (Method::POST, "/actions/restore".to_owned(), None),
    ];
    let mut etags = vec![created.etag()];
    for (method, sub, body) in steps {
        let reply = send(
            &server,
            method.clone(),
            &format!("{path}{sub}{silent}"),
            &ttd,
            body.as_ref(),
            &[],
        )
        .await;
        assert!(
            reply.status == 201 || reply.status == 204,
            "{method} {sub}: {} {}",
            reply.status,
            reply.body
        );
        etags.push(reply.etag());
    }
    let mut distinct = etags.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        etags.len(),
        "silent changes set new revisions too"
    );
    // A silent read by an end user does not mark the dialog seen.
    let read = send(
        &server,
        Method::GET,
        &format!("{EU}/{id}{silent}"),
        &me,
        None,
        &[],
    )
    .await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.body["seenSinceLastUpdate"], json!([]));
    // Silent purge of a live dialog.
    let purged = send(
        &server,
        Method::POST,
        &format!("{path}/actions/purge{silent}"),
        &ttd,
        None,
        &[],
    )
    .await;
    assert_eq!(purged.status, 204, "{}", purged.body);

    settle(&server, &ttd).await;
    assert!(
        of_dialog(&resource_log(&server, &ttd).await, &id).is_empty(),
        "a silent dialog published events"
    );
}

#[tokio::test]
async fn a_silent_update_is_not_a_change_to_be_seen() {
    let server = Server::start();
    let ttd = server.ttd();
    let me = server.person();
    let id = create(&server, &ttd, &dialog(json!({}))).await.id();
    assert_eq!(
        send(&server, Method::GET, &format!("{EU}/{id}"), &me, None, &[])
            .await
            .status,
        200
    );
    let put = send(
        &server,
        Method::PUT,
        &format!("{SO}/{id}?isSilentUpdate=true"),
        &ttd,
        Some(&dialog(json!({"status": "Draft"}))),
        &[],
    )
    .await;
    assert_eq!(put.status, 204, "{}", put.body);
    let read = send(&server, Method::GET, &format!("{EU}/{id}"), &me, None, &[]).await;
    assert_eq!(read.body["status"], "Draft");
    settle(&server, &ttd).await;
    expect_types(&server, &ttd, &id, &[CREATED, UPDATED, SEEN]).await;
}

/// The attributes of an event, with the values a test cannot know (id, time) checked and replaced.
fn normalized(event: &Value, started: DateTime<Utc>) -> Value {
    let mut e = event.clone();
    let id = e["id"].as_str().expect("id");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "id is a UUID: {id}");
    let time = DateTime::parse_from_rfc3339(e["time"].as_str().expect("time")).expect("RFC 3339");
    let time = time.with_timezone(&Utc);
    assert!(
        time >= started - chrono::Duration::seconds(1) && time <= Utc::now(),
        "time {time} is the change's"
    );
    e["id"] = json!("<id>");
    e["time"] = json!("<time>");
    e
}

#[tokio::test]
async fn every_cloud_event_attribute_is_as_dialogporten_writes_it() {
    let server = Server::start();
    let ttd = server.ttd();
    let me = server.person();
    let started = Utc::now();
    let id = "f4e6df3c-7434-44c3-875e-8dca1cdf0b20";
    let activity = "21241c7e-819f-462b-b8a4-d5d32352311a";
    let transmission = "0195a9c5-7c1e-7e43-a6d2-6f6d2a1f6c11";
    create(
        &server,
        &ttd,
        &dialog(json!({
            "id": id,
            "activities": [{
                "id": activity,
                "type": "SignatureProvided",
                "extendedType": "urn:altinn:additional-info-received"
            }],
            "transmissions": [{
                "id": transmission,
                "type": "Information",
                "sender": {"actorType": "ServiceOwner"}
            }]
        })),
    )
    .await;
    let read = send(&server, Method::GET, &format!("{EU}/{id}"), &me, None, &[]).await;
    assert_eq!(read.status, 200, "{}", read.body);
    let entry = read.body["seenSinceLastUpdate"][0]["id"].clone();
    let path = format!("{SO}/{id}");
    assert_eq!(
        send(&server, Method::DELETE, &path, &ttd, None, &[])
            .await
            .status,
        204
    );
    assert_eq!(
        send(
            &server,
            Method::POST,
            &format!("{path}/actions/restore"),
            &ttd,
            None,
            &[]
        )
        .await
        .status,
        204
    );
    let events = expect_types(
        &server,
        &ttd,
        id,
        &[
            CREATED,
            &activity_type("signature-provided"),
            TRANSMISSION,
            UPDATED,
            SEEN,
            DELETED,
            RESTORED,
        ],
    )
    .await;
    let source = format!("{BASE}/api/v1/enduser/dialogs/{id}");
    let process = json!({"process": PROCESS, "precedingProcess": PRECEDING});
    let about = |event_type: &str, source: &str, data: &Value| {
        json!({
            "specversion": "1.0",
            "id": "<id>",
            "type": event_type,
            "time": "<time>",
            "resource": RESOURCE,
            "resourceinstance": id,
            "subject": PARTY,
            "source": source,
            "data": data
        })
    };
    // Example 1 of the seed document, and the same shape for the other dialog events.
    for (i, event_type) in [
        (0, CREATED),
        (3, UPDATED),
        (4, SEEN),
        (5, DELETED),
        (6, RESTORED),
    ] {
        assert_eq!(
            normalized(&events[i], started),
            about(event_type, &source, &process),
            "{event_type}"
        );
    }
    // Example 2 of the seed document.
    assert_eq!(
        normalized(&events[1], started),
        about(
            &activity_type("signature-provided"),
            &format!("{source}/activities/{activity}"),
            &json!({
                "activityId": activity,
                "extendedActivityType": "urn:altinn:additional-info-received",
                "process": PROCESS,
                "precedingProcess": PRECEDING
            })
        )
    );
    assert_eq!(
        normalized(&events[2], started),
        about(
            TRANSMISSION,
            &format!("{source}/transmissions/{transmission}"),
            &json!({"senderType": "ServiceOwner", "process": PROCESS, "precedingProcess": PRECEDING})
        )
    );
    // The attribute order of the examples, and one change's events share its time.
    let text = serde_json::to_string(&events[0]).expect("JSON");
    let keys: Vec<&str> = events[0]
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "specversion",
            "id",
            "type",
            "time",
            "resource",
            "resourceinstance",
            "subject",
            "source",
            "data"
        ],
        "{text}"
    );
    assert_eq!(events[0]["time"], events[1]["time"]);
    assert_eq!(events[0]["time"], events[2]["time"]);
    assert_eq!(
        events[4]["id"], entry,
        "the seen event's id is the seen-log entry's"
    );
    let mut ids: Vec<&Value> = events.iter().map(|e| &e["id"]).collect();
    ids.sort_by_key(|v| v.to_string());
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "every event has its own id");

    // Without process fields there is no data at all; activities always carry activityId.
    let bare = create(
        &server,
        &ttd,
        &json!({"serviceResource": RESOURCE, "party": PARTY, "activities": [{"type": "Information"}]}),
    )
    .await
    .id();
    let events = expect_types(
        &server,
        &ttd,
        &bare,
        &[CREATED, &activity_type("information")],
    )
    .await;
    assert!(events[0].get("data").is_none(), "{}", events[0]);
    let data = events[1]["data"].as_object().expect("data");
    assert_eq!(data.keys().collect::<Vec<_>>(), ["activityId"]);
}

#[tokio::test]
async fn the_source_base_is_configurable() {
    let server = Server::start_with(&["--dialog-source-base", "https://dialogs.example.test/dp/"]);
    let ttd = server.ttd();
    let id = create(&server, &ttd, &dialog(json!({}))).await.id();
    let events = expect_types(&server, &ttd, &id, &[CREATED]).await;
    assert_eq!(
        events[0]["source"],
        format!("https://dialogs.example.test/dp/api/v1/enduser/dialogs/{id}")
    );
}

#[tokio::test]
async fn end_users_see_the_events_and_dialogs_of_parties_they_may_read_only() {
    let server = Server::start();
    let ttd = server.ttd();
    let me = server.person();
    let stranger = server.other_person();
    let id = create(
        &server,
        &ttd,
        &dialog(json!({"activities": [{"type": "Information"}]})),
    )
    .await
    .id();
    expect_types(
        &server,
        &ttd,
        &id,
        &[CREATED, &activity_type("information")],
    )
    .await;

    // The person with access to the party reads the dialog's events through the Events API.
    let mine = of_dialog(&resource_log(&server, &me).await, &id);
    assert_eq!(
        types(&mine),
        [CREATED.to_owned(), activity_type("information")]
    );
    // A person without access sees none of them, and no dialog.
    assert!(of_dialog(&resource_log(&server, &stranger).await, &id).is_empty());
    let hidden = send(
        &server,
        Method::GET,
        &format!("{EU}/{id}"),
        &stranger,
        None,
        &[],
    )
    .await;
    assert_eq!(hidden.status, 404, "{}", hidden.body);
    let list = send(&server, Method::GET, EU, &stranger, None, &[]).await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert_eq!(list.body["items"], json!([]));

    // The person with access lists and reads it.
    let list = send(&server, Method::GET, EU, &me, None, &[]).await;
    assert_eq!(list.status, 200, "{}", list.body);
    let ids: Vec<&Value> = list.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| &d["id"])
        .collect();
    assert_eq!(ids, [&json!(id)]);
    assert_eq!(list.body["hasNextPage"], false);
    // The stranger's reads published nothing; the person's read is seen.
    assert_eq!(
        send(&server, Method::GET, &format!("{EU}/{id}"), &me, None, &[])
            .await
            .status,
        200
    );
    settle(&server, &ttd).await;
    let events = expect_types(
        &server,
        &ttd,
        &id,
        &[CREATED, &activity_type("information"), UPDATED, SEEN],
    )
    .await;
    assert_eq!(
        types(&of_dialog(&resource_log(&server, &me).await, &id)),
        types(&events)
    );
}

#[tokio::test]
async fn only_the_owner_of_the_service_resource_may_manage_its_dialogs() {
    let server = Server::start();
    let ttd = server.ttd();
    let skd = server.token(&["--org", "skd", "--scope", "altinn:events.publish"]);
    let me = server.person();

    let refused = send(
        &server,
        Method::POST,
        SO,
        &skd,
        Some(&dialog(json!({}))),
        &[],
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let as_person = send(
        &server,
        Method::POST,
        SO,
        &me,
        Some(&dialog(json!({}))),
        &[],
    )
    .await;
    assert_eq!(as_person.status, 403, "{}", as_person.body);
    let anonymous = client()
        .post(server.at(SO))
        .json(&dialog(json!({})))
        .send()
        .await
        .expect("request");
    assert_eq!(anonymous.status(), 401);

    let id = create(&server, &ttd, &dialog(json!({}))).await.id();
    for (method, sub) in [
        (Method::GET, ""),
        (Method::DELETE, ""),
        (Method::POST, "/actions/purge"),
    ] {
        let reply = send(
            &server,
            method.clone(),
            &format!("{SO}/{id}{sub}"),
            &skd,
            None,
            &[],
        )
        .await;
        assert_eq!(reply.status, 403, "{method} {sub}: {}", reply.body);
    }
    let list = send(&server, Method::GET, SO, &skd, None, &[]).await;
    assert_eq!(list.body["items"], json!([]));
    let list = send(&server, Method::GET, SO, &ttd, None, &[]).await;
    assert_eq!(list.body["items"].as_array().map(Vec::len), Some(1));
    let missing = send(
        &server,
        Method::GET,
        &format!("{SO}/0195a9c5-0000-7000-8000-000000000000"),
        &ttd,
        None,
        &[],
    )
    .await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    let duplicate = send(
        &server,
        Method::POST,
        SO,
        &ttd,
        Some(&dialog(json!({"id": id}))),
        &[],
    )
    .await;
    assert_eq!(duplicate.status, 409, "{}", duplicate.body);
}

#[tokio::test]
async fn invalid_requests_are_problem_details_with_field_errors() {
    let server = Server::start();
    let ttd = server.ttd();
    let bad = send(
        &server,
        Method::POST,
        SO,
        &ttd,
        Some(&json!({
            "serviceResource": RESOURCE,
            "party": "urn:altinn:organization:identifier-no:123",
            "status": "Almost",
            "progress": 200,
            "activities": [{"type": "Nope"}],
            "transmissions": [{"sender": {"actorType": "ServiceOwner"}}]
        })),
        &[],
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(bad.headers["content-type"], "application/problem+json");
    let errors = bad.body["errors"].as_object().expect("errors");
    assert!(errors.contains_key("party"), "{}", bad.body);
    let fixed_party = send(
        &server,
        Method::POST,
        SO,
        &ttd,
        Some(&dialog(json!({
            "status": "Almost",
            "progress": 200,
            "activities": [{"type": "Nope"}],
            "transmissions": [{"sender": {"actorType": "ServiceOwner"}}]
        }))),
        &[],
    )
    .await;
    assert_eq!(fixed_party.status, 400, "{}", fixed_party.body);
    let errors = fixed_party.body["errors"].as_object().expect("errors");
    for field in [
        "status",
        "progress",
        "activities[0].type",
        "transmissions[0].type",
    ] {
        assert!(errors.contains_key(field), "{field}: {}", fixed_party.body);
    }
    // As Dialogporten's validator: no preceding process without a process.
    let preceding_alone = send(
        &server,
        Method::POST,
        SO,
        &ttd,
        Some(&json!({"serviceResource": RESOURCE, "party": PARTY, "precedingProcess": PRECEDING})),
        &[],
    )
    .await;
    assert_eq!(preceding_alone.status, 400, "{}", preceding_alone.body);
    assert!(
        preceding_alone.body["errors"]["precedingProcess"].is_array(),
        "{}",
        preceding_alone.body
    );
    let not_json = client()
        .post(server.at(SO))
        .bearer_auth(&ttd)
        .body("{")
        .send()
        .await
        .expect("request");
    assert_eq!(not_json.status(), 400);
    let id = create(&server, &ttd, &dialog(json!({}))).await.id();
    let moved = send(
        &server,
        Method::PATCH,
        &format!("{SO}/{id}"),
        &ttd,
        Some(&json!([{"op": "replace", "path": "/party", "value": "urn:altinn:person:identifier-no:07124912037"}])),
        &[],
    )
    .await;
    assert_eq!(moved.status, 400, "{}", moved.body);
    assert!(moved.body["errors"]["party"].is_array(), "{}", moved.body);
    let not_a_patch = send(
        &server,
        Method::PATCH,
        &format!("{SO}/{id}"),
        &ttd,
        Some(&json!({"status": "Sent"})),
        &[],
    )
    .await;
    assert_eq!(not_a_patch.status, 400, "{}", not_a_patch.body);
    settle(&server, &ttd).await;
    expect_types(&server, &ttd, &id, &[CREATED]).await;
}

/// The forwarder publishes to a remote Events API that is down at first: the events wait in the
/// outbox, go out once it answers, and arrive once each with their ids.
#[tokio::test]
async fn events_reach_a_remote_events_api_even_if_it_is_down_at_first() {
    // The remote's data directory and a token signed with its key, before it runs.
    let remote_dir = tempfile::tempdir().expect("dir");
    let remote_data = remote_dir.path().join("data");
    let remote_data_arg = remote_data.to_string_lossy().into_owned();
    let remote_token = token_for(
        &remote_data,
        &["--org", "ttd", "--scope", &format!("{PUBLISH} {SUBSCRIBE}")],
    );
    let port = free_port();
    let remote_url = format!("http://127.0.0.1:{port}");

    let local = Server::start_with(&[
        "--dialog-events-url",
        &remote_url,
        "--dialog-events-token",
        &remote_token,
    ]);
    let ttd = local.ttd();
    let id = create(
        &local,
        &ttd,
        &dialog(json!({"activities": [{"type": "FormSaved"}]})),
    )
    .await
    .id();
    // The forwarder has failed at least once.
    local
        .wait_for_log("forwarding dialog events failed", Duration::from_secs(10))
        .await;
    assert!(
        !local.log().contains(&remote_token),
        "the token is never logged"
    );

    let remote = Server::start_with(&[
        "--data-dir",
        &remote_data_arg,
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]);
    assert_eq!(remote.url, remote_url);
    let events = expect_types(
        &remote,
        &remote_token,
        &id,
        &[CREATED, &activity_type("form-saved")],
    )
    .await;
    assert_eq!(events[0]["resourceinstance"], id);
    // Nothing went into the local store.
    assert!(of_dialog(&resource_log(&local, &ttd).await, &id).is_empty());
    // A later change follows without delay, and nothing arrives twice.
    let changed = send(
        &local,
        Method::PATCH,
        &format!("{SO}/{id}"),
        &ttd,
        Some(&json!([{"op": "replace", "path": "/status", "value": "Sent"}])),
        &[],
    )
    .await;
    assert_eq!(changed.status, 204, "{}", changed.body);
    expect_types(
        &remote,
        &remote_token,
        &id,
        &[CREATED, &activity_type("form-saved"), UPDATED],
    )
    .await;
}

/// Outbox rows written before a crash are published after the restart.
#[tokio::test]
async fn the_outbox_survives_a_restart() {
    let mut server = Server::start_with(&["--no-dialog-forwarder"]);
    let ttd = server.ttd();
    let id = create(&server, &ttd, &dialog(json!({}))).await.id();
    let patch = json!([{"op": "replace", "path": "/status", "value": "Sent"}]);
    assert_eq!(
        send(
            &server,
            Method::PATCH,
            &format!("{SO}/{id}"),
            &ttd,
            Some(&patch),
            &[]
        )
        .await
        .status,
        204
    );
    server.kill9();
    // The harness restarts with the same arguments; a node that forwards shares the data directory.
    let forwarder = Server::start_beside(&server, &[]);
    expect_types(&forwarder, &ttd, &id, &[CREATED, UPDATED]).await;
}
