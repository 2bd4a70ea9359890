//! Webhook subscriptions and push delivery, black-box: the real `hendelse serve` binary driven
//! through HTTP only, delivering to real HTTP receivers (small axum servers on loopback inside the
//! test) that record every request and answer as each test scripts them.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::{
    Answer, Gate, Hit, OTHER_PERSON, PATIENCE, PERSON, PERSON_PARTY, PUBLISH, RESOURCE, Receiver,
    Reply, SKD_RESOURCE, SUBSCRIBE, SUBSCRIPTIONS, Server, Swarm, TO_LOOPBACK, client,
    create_subscription, deliveries, eventually, generic_event, get_subscription, id_of,
    publish_batch_ok, publish_ok, secret_of, subscribe, subscribe_to, wait_validated,
};
use hendelse_store::testing::TestDatabase;
use serde_json::{Value, json};

const ORG_URN: &str = "urn:altinn:organization:identifier-no:";
/// The organisation the generic events are about (party 50001337; the person may read it).
const ORG: &str = "991825827";
/// `ORG`'s party id.
const ORG_PARTY: i64 = 50001337;
/// Another organisation (party 50004444) that neither the person nor skd may read.
const OTHER_ORG: &str = "912345678";
/// A subunit of `ORG` (party 50005555, `"parentOrganization": "991825827"` in the registry).
const SUBUNIT: &str = "910000001";
/// The fast retry ladder of these tests: 4 attempts in all.
const LADDER: &str = "100ms,200ms,300ms";
/// How long to watch for something that should not happen (several times the whole ladder).
const QUIET: Duration = Duration::from_millis(1500);

// ---------------------------------------------------------------------------------------------
// Talking to Hendelse.
// ---------------------------------------------------------------------------------------------

/// The flags every push test needs: plain http and loopback receivers, the fast ladder.
fn push_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    [&TO_LOOPBACK[..], &["--retry-schedule", LADDER], extra].concat()
}

fn push_server(extra: &[&str]) -> Server {
    Server::start_with(&push_args(extra))
}

async fn call(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Answer {
    let mut request = client().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    common::send(request).await
}

async fn delete_subscription(server: &Server, token: &str, id: i64) -> Answer {
    call(
        reqwest::Method::DELETE,
        &server.at(&format!("{SUBSCRIPTIONS}/{id}")),
        Some(token),
        None,
    )
    .await
}

async fn list(server: &Server, token: &str) -> Value {
    let answer = call(
        reqwest::Method::GET,
        &server.at(SUBSCRIPTIONS),
        Some(token),
        None,
    )
    .await;
    assert_eq!(answer.status, 200, "list: {}", answer.text);
    let subscriptions = answer.body["subscriptions"]
        .as_array()
        .unwrap_or_else(|| panic!("subscriptions array in {}", answer.text));
    assert_eq!(
        answer.body["count"].as_u64(),
        Some(subscriptions.len() as u64),
        "count of {}",
        answer.text
    );
    answer.body
}

fn listed_ids(list: &Value) -> BTreeSet<i64> {
    list["subscriptions"]
        .as_array()
        .expect("array")
        .iter()
        .map(id_of)
        .collect()
}

/// The delivery of `event_id` in a subscription's deliveries, if listed.
fn delivery_of<'a>(deliveries: &'a [Value], event_id: &str) -> Option<&'a Value> {
    deliveries.iter().find(|d| d["eventId"] == event_id)
}

async fn redrive(server: &Server, token: &str, id: i64) -> Answer {
    call(
        reqwest::Method::POST,
        &server.at(&format!("{SUBSCRIPTIONS}/{id}/redrive")),
        Some(token),
        None,
    )
    .await
}

/// A generic event with its own source, type and subject.
fn event(id: &str, source: &str, kind: &str, subject: &str) -> Value {
    let mut event = generic_event(id);
    event["source"] = json!(source);
    event["type"] = json!(kind);
    event["subject"] = json!(subject);
    event
}

/// Waits until `path` has received (and answered 2xx to) every one of `ids`.
async fn wait_accepted(receiver: &Receiver, path: &str, ids: &BTreeSet<String>, limit: Duration) {
    eventually(
        &format!("{} events accepted at {path}", ids.len()),
        limit,
        async || {
            let accepted = receiver.accepted_on(path);
            let missing: Vec<&String> = ids.iter().filter(|id| !accepted.contains(*id)).collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} missing, e.g. {:?}",
                    missing.len(),
                    missing.iter().take(10).collect::<Vec<_>>()
                ))
            }
        },
    )
    .await
}

/// Asserts an RFC 7807 problem with `status`, mentioning (case-insensitively) one of `mentions`.
fn assert_problem(answer: &Answer, status: u16, mentions: &[&str], context: &str) {
    common::assert_problem(answer, status, context);
    if !mentions.is_empty() {
        let text = answer.text.to_lowercase();
        assert!(
            mentions.iter().any(|m| text.contains(&m.to_lowercase())),
            "{context}: the problem should say which rule failed (one of {mentions:?}): {}",
            answer.text
        );
    }
}

/// One creation rule: what, who, body, expected status, what the problem should mention.
type Rule<'a> = (&'a str, &'a str, Value, u16, &'static [&'static str]);

fn rule<'a>(
    what: &'a str,
    token: &'a str,
    body: Value,
    status: u16,
    mentions: &'static [&'static str],
) -> Rule<'a> {
    (what, token, body, status, mentions)
}

// ---------------------------------------------------------------------------------------------
// 1. CRUD, validation handshake and the creation rules.
// ---------------------------------------------------------------------------------------------

/// Creation answers 201 with `Location` and the stored subscription; `validated` turns true only
/// after the endpoint answered the validation handshake with 2xx, and events published meanwhile
/// are delivered after it; each caller lists, reads and deletes only its own; deletion drops
/// pending deliveries and stops new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscriptions_are_created_validated_listed_and_deleted_by_their_owner_only() {
    let server = push_server(&[]);
    let receiver = Receiver::start().await;
    let ttd = server.ttd();
    let person = server.person();
    let skd = server.skd();

    // Published before the subscription exists: never delivered.
    publish_ok(&server, &ttd, &generic_event("crud-before")).await;

    // The validation handshake is held open until the gate opens.
    let gate = Gate::new();
    {
        let gate = gate.clone();
        receiver.script(move |hit| {
            if hit.path == "/held" && hit.is_validation() {
                Reply::ok().after(&gate)
            } else if hit.path == "/held" && hit.event_id() == "crud-pending" {
                Reply::status(500)
            } else {
                Reply::ok()
            }
        });
    }
    let answer = create_subscription(
        &server,
        &ttd,
        &json!({"endPoint": receiver.url("/held"), "resourceFilter": RESOURCE}),
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let created = answer.body.clone();
    let id = id_of(&created);
    let location = answer.header("location").expect("Location header");
    assert!(
        location.ends_with(&format!("{SUBSCRIPTIONS}/{id}")),
        "Location {location} for id {id}"
    );
    assert_eq!(created["endPoint"], receiver.url("/held"));
    assert_eq!(created["resourceFilter"], RESOURCE);
    for absent in [
        "sourceFilter",
        "subjectFilter",
        "alternativeSubjectFilter",
        "typeFilter",
    ] {
        assert!(
            created.get(absent).is_some_and(Value::is_null),
            "{absent} should be present and null: {created}"
        );
    }
    assert_eq!(created["includeSubunits"], false, "{created}");
    assert_eq!(created["consumer"], "/org/ttd", "{created}");
    assert_eq!(created["createdBy"], "/org/ttd", "{created}");
    let created_at = created["created"].as_str().expect("created");
    assert!(
        chrono::DateTime::parse_from_rfc3339(created_at).is_ok(),
        "created is RFC 3339: {created_at}"
    );
    assert_eq!(
        created["validated"], false,
        "validation is still held: {created}"
    );
    assert_eq!(created["enabled"], true, "{created}");
    assert_eq!(created["hasSecret"], false, "{created}");
    assert!(created.get("secret").is_none(), "{created}");

    // The handshake arrives (and is held); an event published now waits for validation.
    let handshake = eventually("the validation handshake", PATIENCE, async || {
        receiver
            .hits_on("/held")
            .into_iter()
            .find(Hit::is_validation)
            .ok_or_else(|| format!("{:?}", receiver.hits()))
    })
    .await;
    publish_ok(&server, &ttd, &generic_event("crud-during")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = get_subscription(&server, &ttd, id).await;
    assert_eq!(before.status, 200, "{}", before.text);
    assert_eq!(
        before.body["validated"], false,
        "no 2xx yet: {}",
        before.text
    );
    assert!(
        receiver.deliveries_on("/held").is_empty(),
        "an event was delivered before the subscription was validated"
    );
    gate.open();
    wait_validated(&server, &ttd, id).await;
    let during: BTreeSet<String> = ["crud-during".to_owned()].into();
    wait_accepted(&receiver, "/held", &during, PATIENCE).await;

    // The handshake's shape.
    let h = &handshake.event;
    assert_eq!(h["specversion"], "1.0", "{h}");
    assert!(h["id"].as_str().is_some_and(|s| !s.is_empty()), "{h}");
    assert!(
        h["source"]
            .as_str()
            .is_some_and(|s| s.ends_with(&format!("{SUBSCRIPTIONS}/{id}"))),
        "handshake source names the subscription: {h}"
    );
    assert!(
        h["time"]
            .as_str()
            .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()),
        "{h}"
    );
    assert!(
        handshake.webhook_id().is_some(),
        "webhook-id is sent always"
    );

    // Events after validation arrive; the one before the subscription never does.
    publish_ok(&server, &ttd, &generic_event("crud-after")).await;
    let after: BTreeSet<String> = ["crud-after".to_owned()].into();
    wait_accepted(&receiver, "/held", &after, PATIENCE).await;
    assert!(
        !receiver.ids_on("/held").contains("crud-before"),
        "an event published before the subscription was delivered"
    );

    // More subscribers: an app subscription (resourceFilter derived), the person (own party),
    // a person with a user id, an org-number token (own party).
    let app = subscribe(
        &server,
        &ttd,
        &json!({"endPoint": receiver.url("/app"),
                "sourceFilter": "https://ttd.apps.altinn.no/ttd/app1"}),
    )
    .await;
    assert_eq!(
        app["resourceFilter"], "urn:altinn:resource:app_ttd_app1",
        "resourceFilter derived from the app source: {app}"
    );
    let mine = subscribe(
        &server,
        &person,
        &json!({"endPoint": receiver.url("/mine"), "resourceFilter": RESOURCE,
                "subjectFilter": format!("urn:altinn:person:identifier-no:{PERSON}")}),
    )
    .await;
    assert_eq!(mine["consumer"], format!("/person/{PERSON}"), "{mine}");
    assert_eq!(mine["createdBy"], format!("/person/{PERSON}"), "{mine}");
    let user = server.token(&[
        "--pid",
        PERSON,
        "--party-id",
        &PERSON_PARTY.to_string(),
        "--user-id",
        "20001234",
        "--scope",
        SUBSCRIBE,
    ]);
    let by_user = subscribe(
        &server,
        &user,
        &json!({"endPoint": receiver.url("/user"), "resourceFilter": RESOURCE,
                "subjectFilter": format!("{ORG_URN}{ORG}")}),
    )
    .await;
    assert_eq!(by_user["consumer"], "/user/20001234", "{by_user}");
    let orgno = server.token(&["--org-number", ORG, "--scope", SUBSCRIBE]);
    let by_orgno = subscribe(
        &server,
        &orgno,
        &json!({"endPoint": receiver.url("/orgno"), "resourceFilter": RESOURCE,
                "subjectFilter": format!("{ORG_URN}{ORG}")}),
    )
    .await;
    assert_eq!(
        by_orgno["consumer"],
        format!("/organisation/{ORG}"),
        "{by_orgno}"
    );

    // Each lists its own only.
    assert_eq!(
        listed_ids(&list(&server, &ttd).await),
        [id, id_of(&app)].into()
    );
    assert_eq!(
        listed_ids(&list(&server, &person).await),
        [id_of(&mine)].into()
    );
    assert_eq!(
        listed_ids(&list(&server, &user).await),
        [id_of(&by_user)].into()
    );
    assert_eq!(
        listed_ids(&list(&server, &orgno).await),
        [id_of(&by_orgno)].into()
    );
    let skd_list = list(&server, &skd).await;
    assert_eq!(skd_list["count"], 0, "{skd_list}");

    // Someone else's subscription does not exist for them.
    for (who, token) in [("skd", &skd), ("the person", &person)] {
        assert_problem(
            &get_subscription(&server, token, id).await,
            404,
            &[],
            &format!("GET ttd's subscription as {who}"),
        );
        assert_problem(
            &delete_subscription(&server, token, id).await,
            404,
            &[],
            &format!("DELETE ttd's subscription as {who}"),
        );
    }
    assert_problem(
        &get_subscription(&server, &ttd, 987_654_321).await,
        404,
        &[],
        "GET a subscription that does not exist",
    );
    for (who, token) in [("skd", &skd), ("the person", &person)] {
        let url = server.at(&format!("{SUBSCRIPTIONS}/{id}/deliveries"));
        assert_problem(
            &call(reqwest::Method::GET, &url, Some(token), None).await,
            404,
            &[],
            &format!("deliveries of ttd's subscription as {who}"),
        );
    }
    assert_eq!(
        get_subscription(&server, &ttd, id).await.status,
        200,
        "still there"
    );

    // A delivery being retried when the subscription is deleted is dropped.
    publish_ok(&server, &ttd, &generic_event("crud-pending")).await;
    eventually("the first attempt of crud-pending", PATIENCE, async || {
        if receiver.ids_on("/held").contains("crud-pending") {
            Ok(())
        } else {
            Err(format!("{:?}", receiver.ids_on("/held")))
        }
    })
    .await;
    let deleted = delete_subscription(&server, &ttd, id).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    assert_eq!(
        deleted.body["id"], id,
        "the deleted subscription: {}",
        deleted.text
    );
    let deleted_at = Instant::now();
    assert_problem(
        &get_subscription(&server, &ttd, id).await,
        404,
        &[],
        "GET after DELETE",
    );
    assert_problem(
        &delete_subscription(&server, &ttd, id).await,
        404,
        &[],
        "DELETE twice",
    );
    assert_eq!(listed_ids(&list(&server, &ttd).await), [id_of(&app)].into());
    publish_ok(&server, &ttd, &generic_event("crud-gone")).await;
    tokio::time::sleep(QUIET).await;
    let late: Vec<String> = receiver
        .deliveries_on("/held")
        .iter()
        .filter(|h| h.at > deleted_at + Duration::from_millis(400))
        .map(|h| format!("{} (attempt {})", h.event_id(), h.attempt))
        .collect();
    assert!(
        late.is_empty(),
        "deliveries sent after the subscription was deleted: {late:?}"
    );
    // The other subscriptions still get crud-gone (so it was published and dispatched).
    let gone: BTreeSet<String> = ["crud-gone".to_owned()].into();
    wait_accepted(&receiver, "/user", &gone, PATIENCE).await;
    assert!(!receiver.ids_on("/held").contains("crud-gone"));
}

/// Every rule of creation answers 400 (or 403 for a party the subscriber may not read, or for a
/// token without the subscribe scope) with problem details, and creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_subscriptions_are_rejected_with_problem_details() {
    let server = push_server(&[]);
    let receiver = Receiver::start().await;
    let ttd = server.ttd();
    let person = server.person();
    let skd = server.skd();
    let rejected = receiver.url("/rejected");

    // Scope and authentication.
    let publish_only = server.token(&["--org", "ttd", "--scope", PUBLISH]);
    let body = json!({"endPoint": rejected, "resourceFilter": RESOURCE});
    assert_problem(
        &create_subscription(&server, &publish_only, &body).await,
        403,
        &[],
        "no subscribe scope",
    );
    assert_problem(
        &call(
            reqwest::Method::GET,
            &server.at(SUBSCRIPTIONS),
            Some(&publish_only),
            None,
        )
        .await,
        403,
        &[],
        "list without subscribe scope",
    );
    let anonymous = call(
        reqwest::Method::POST,
        &server.at(SUBSCRIPTIONS),
        None,
        Some(&body),
    )
    .await;
    assert_eq!(anonymous.status, 401, "no token: {}", anonymous.text);

    let cases = [
        rule(
            "missing endPoint",
            &ttd,
            json!({"resourceFilter": RESOURCE}),
            400,
            &["endpoint"],
        ),
        rule(
            "relative endPoint",
            &ttd,
            json!({"endPoint": "/hook", "resourceFilter": RESOURCE}),
            400,
            &["endpoint"],
        ),
        rule(
            "endPoint not a URL",
            &ttd,
            json!({"endPoint": "not a url", "resourceFilter": RESOURCE}),
            400,
            &["endpoint"],
        ),
        rule(
            "ftp endPoint",
            &ttd,
            json!({"endPoint": format!("ftp://127.0.0.1:{}/x", receiver.port()), "resourceFilter": RESOURCE}),
            400,
            &["endpoint", "http"],
        ),
        rule(
            "missing resourceFilter",
            &ttd,
            json!({"endPoint": rejected}),
            400,
            &["resourcefilter"],
        ),
        rule(
            "resourceFilter without urn:altinn:resource:",
            &ttd,
            json!({"endPoint": rejected, "resourceFilter": "super-simple-service"}),
            400,
            &["resourcefilter"],
        ),
        rule(
            "person without subjectFilter",
            &person,
            json!({"endPoint": rejected, "resourceFilter": RESOURCE}),
            400,
            &["subjectfilter"],
        ),
        rule(
            "non-owner org without subjectFilter",
            &skd,
            json!({"endPoint": rejected, "resourceFilter": RESOURCE}),
            400,
            &["subjectfilter"],
        ),
        rule(
            "person filtering for an org it may not read",
            &person,
            json!({"endPoint": rejected, "resourceFilter": RESOURCE, "subjectFilter": format!("{ORG_URN}{OTHER_ORG}")}),
            403,
            &[],
        ),
        rule(
            "person filtering for another person",
            &person,
            json!({"endPoint": rejected, "resourceFilter": RESOURCE, "subjectFilter": format!("urn:altinn:person:identifier-no:{OTHER_PERSON}")}),
            403,
            &[],
        ),
        rule(
            "person filtering for another person's party",
            &person,
            json!({"endPoint": rejected, "resourceFilter": RESOURCE, "subjectFilter": "/party/50003333"}),
            403,
            &[],
        ),
        rule(
            "skd filtering for an org it may not read",
            &skd,
            json!({"endPoint": rejected, "resourceFilter": RESOURCE, "subjectFilter": format!("{ORG_URN}{ORG}")}),
            403,
            &[],
        ),
        rule(
            "secret without whsec_",
            &ttd,
            json!({"endPoint": rejected, "resourceFilter": RESOURCE, "secret": secret_of(32).trim_start_matches("whsec_")}),
            400,
            &["secret"],
        ),
        rule(
            "secret not base64",
            &ttd,
            json!({"endPoint": rejected, "resourceFilter": RESOURCE, "secret": "whsec_!!!not*base64!!!"}),
            400,
            &["secret"],
        ),
        rule(
            "empty secret",
            &ttd,
            json!({"endPoint": rejected, "resourceFilter": RESOURCE, "secret": "whsec_"}),
            400,
            &["secret"],
        ),
        rule(
            "secret of 23 bytes",
            &ttd,
            json!({"endPoint": rejected, "resourceFilter": RESOURCE, "secret": secret_of(23)}),
            400,
            &["secret"],
        ),
        rule(
            "secret of 65 bytes",
            &ttd,
            json!({"endPoint": rejected, "resourceFilter": RESOURCE, "secret": secret_of(65)}),
            400,
            &["secret"],
        ),
    ];
    for (what, token, body, status, mentions) in &cases {
        assert_problem(
            &create_subscription(&server, token, body).await,
            *status,
            mentions,
            what,
        );
    }

    // The limits themselves are fine.
    for (path, bytes) in [("/secret24", 24), ("/secret64", 64)] {
        let s = subscribe(
            &server,
            &ttd,
            &json!({"endPoint": receiver.url(path), "resourceFilter": RESOURCE,
                    "secret": secret_of(bytes)}),
        )
        .await;
        assert_eq!(s["hasSecret"], true, "{s}");
    }
    // The person may filter for an org it may read.
    subscribe(
        &server,
        &person,
        &json!({"endPoint": receiver.url("/readable"), "resourceFilter": RESOURCE,
                "subjectFilter": format!("{ORG_URN}{ORG}")}),
    )
    .await;
    assert_eq!(list(&server, &ttd).await["count"], 2);
    assert_eq!(list(&server, &person).await["count"], 1);
    assert_eq!(list(&server, &skd).await["count"], 0);

    // Plain http only with --allow-http-webhooks.
    let no_http = Server::start_with(&["--allow-private-webhooks", "--retry-schedule", LADDER]);
    let ttd2 = no_http.ttd();
    assert_problem(
        &create_subscription(
            &no_http,
            &ttd2,
            &json!({"endPoint": rejected, "resourceFilter": RESOURCE}),
        )
        .await,
        400,
        &["https", "http"],
        "http endPoint without --allow-http-webhooks",
    );
    let tls = subscribe(
        &no_http,
        &ttd2,
        &json!({"endPoint": format!("https://127.0.0.1:{}/tls", receiver.port()),
                "resourceFilter": RESOURCE}),
    )
    .await;
    assert_eq!(tls["validated"], false, "{tls}");
    assert_eq!(list(&no_http, &ttd2).await["count"], 1);

    // Loopback, private and link-local hosts only with --allow-private-webhooks.
    let no_private = Server::start_with(&["--allow-http-webhooks", "--retry-schedule", LADDER]);
    let ttd3 = no_private.ttd();
    let port = receiver.port();
    for endpoint in [
        format!("http://127.0.0.1:{port}/rejected"),
        format!("http://localhost:{port}/rejected"),
        format!("http://[::1]:{port}/rejected"),
        "http://10.1.2.3/rejected".to_owned(),
        "http://192.168.1.10/rejected".to_owned(),
        "http://172.16.0.1/rejected".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        format!("https://127.0.0.1:{port}/rejected"),
    ] {
        assert_problem(
            &create_subscription(
                &no_private,
                &ttd3,
                &json!({"endPoint": endpoint, "resourceFilter": RESOURCE}),
            )
            .await,
            400,
            &[],
            &format!("{endpoint} without --allow-private-webhooks"),
        );
    }
    assert_eq!(list(&no_private, &ttd3).await["count"], 0);

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        receiver.hits_on("/rejected").is_empty(),
        "a rejected subscription's endpoint was contacted: {:?}",
        receiver.hits_on("/rejected")
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Which events go to which subscription.
// ---------------------------------------------------------------------------------------------

/// Resource, source (with `%`), type, subject (`:` and `::`), alternative subject and subunit
/// filters, alone and together: each subscription receives exactly the events it matches and its
/// subscriber may read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_subscription_receives_exactly_the_events_its_filters_match() {
    let server = push_server(&[]);
    let receiver = Receiver::start().await;
    let ttd = server.ttd();
    let person = server.person();
    let skd = server.skd();
    let org = format!("{ORG_URN}{ORG}");

    let subscriptions: Vec<(&str, &String, Value)> = vec![
        ("/all", &ttd, json!({"resourceFilter": RESOURCE})),
        (
            "/source",
            &ttd,
            json!({"resourceFilter": RESOURCE, "sourceFilter": "https://example.com/matching/a%"}),
        ),
        (
            "/type",
            &ttd,
            json!({"resourceFilter": RESOURCE, "typeFilter": "no.example.created"}),
        ),
        (
            "/subject-double",
            &ttd,
            json!({"resourceFilter": RESOURCE, "subjectFilter": format!("{ORG_URN}:{ORG}")}),
        ),
        (
            "/subject-single",
            &ttd,
            json!({"resourceFilter": RESOURCE, "subjectFilter": format!("{ORG_URN}{OTHER_ORG}")}),
        ),
        (
            "/alternative",
            &ttd,
            json!({"resourceFilter": RESOURCE,
                   "alternativeSubjectFilter": format!("/person/{OTHER_PERSON}")}),
        ),
        (
            "/subunits",
            &ttd,
            json!({"resourceFilter": RESOURCE, "subjectFilter": org, "includeSubunits": true}),
        ),
        (
            "/combined",
            &ttd,
            json!({"resourceFilter": RESOURCE, "subjectFilter": org, "typeFilter": "no.example.up%",
                   "sourceFilter": "https://example.com/matching/%"}),
        ),
        (
            "/person",
            &person,
            json!({"resourceFilter": RESOURCE, "subjectFilter": org}),
        ),
        (
            "/person-subunits",
            &person,
            json!({"resourceFilter": RESOURCE, "subjectFilter": org, "includeSubunits": true}),
        ),
        ("/skd", &skd, json!({"resourceFilter": SKD_RESOURCE})),
        (
            "/party",
            &ttd,
            json!({"resourceFilter": RESOURCE, "subjectFilter": format!("/party/{ORG_PARTY}")}),
        ),
    ];
    let mut subscription_ids = BTreeMap::new();
    for (path, token, filters) in &subscriptions {
        let mut body = filters.clone();
        body["endPoint"] = json!(receiver.url(path));
        let s = subscribe(&server, token, &body).await;
        for (field, value) in filters.as_object().expect("object") {
            if *path == "/subject-double" && field == "subjectFilter" {
                continue; // may be stored in either form
            }
            assert_eq!(&s[field], value, "{path}: {field} stored as given: {s}");
        }
        wait_validated(&server, token, id_of(&s)).await;
        subscription_ids.insert(*path, id_of(&s));
    }

    let m = "https://example.com/matching";
    let mut events = vec![
        event("m1", &format!("{m}/a/1"), "no.example.created", &org),
        event(
            "m2",
            &format!("{m}/b/1"),
            "no.example.updated",
            &format!("{ORG_URN}:{ORG}"),
        ),
        event(
            "m3",
            "https://example.com/MATCHING/A/2",
            "no.example.created",
            &format!("{ORG_URN}{OTHER_ORG}"),
        ),
        event(
            "m4",
            &format!("{m}/b/2"),
            "no.example.deleted",
            &format!("{ORG_URN}:{OTHER_ORG}"),
        ),
        event(
            "m5",
            &format!("{m}/b/3"),
            "NO.EXAMPLE.CREATED",
            &format!("{ORG_URN}{SUBUNIT}"),
        ),
        event(
            "m6",
            &format!("{m}/c/4"),
            "no.example.updated",
            &format!("urn:altinn:person:identifier-no:{OTHER_PERSON}"),
        ),
        event(
            "m7",
            "https://example.com/other/a/1",
            "no.example.created.v2",
            &org,
        ),
        event(
            "m9",
            &format!("{m}/b/9"),
            "no.example.updated",
            &format!("{ORG_URN}:{SUBUNIT}"),
        ),
        // The same party as ORG, named by its party id.
        event(
            "m10",
            &format!("{m}/d/10"),
            "no.example.other",
            &format!("/party/{ORG_PARTY}"),
        ),
    ];
    events[3]["alternativesubject"] = json!(format!("/person/{OTHER_PERSON}"));
    events[5]["alternativesubject"] = json!(format!("/person/{OTHER_PERSON}6"));
    events[6]["alternativesubject"] = json!(format!("/person/{OTHER_PERSON}"));
    for e in &events {
        publish_ok(&server, &ttd, e).await;
    }
    let mut skd_event = event("m8", &format!("{m}/a/8"), "no.example.created", &org);
    skd_event["resource"] = json!(SKD_RESOURCE);
    publish_ok(&server, &skd, &skd_event).await;

    let set = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let expected: BTreeMap<&str, BTreeSet<String>> = [
        (
            "/all",
            set(&["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m9", "m10"]),
        ),
        ("/source", set(&["m1", "m3"])),
        ("/type", set(&["m1", "m3", "m5"])),
        ("/subject-double", set(&["m1", "m2", "m7", "m10"])),
        ("/party", set(&["m1", "m2", "m7", "m10"])),
        ("/subject-single", set(&["m3", "m4"])),
        ("/alternative", set(&["m4", "m7"])),
        ("/subunits", set(&["m1", "m2", "m5", "m7", "m9", "m10"])),
        ("/combined", set(&["m2"])),
        ("/person", set(&["m1", "m2", "m7", "m10"])),
        // The person may not read the subunit: its events are filtered out at delivery.
        ("/person-subunits", set(&["m1", "m2", "m7", "m10"])),
        ("/skd", set(&["m8"])),
    ]
    .into();
    for (path, ids) in &expected {
        wait_accepted(&receiver, path, ids, PATIENCE).await;
    }
    // Anything extra would have arrived by now (the last expected delivery was just seen).
    tokio::time::sleep(QUIET).await;
    let mut wrong = Vec::new();
    for (path, ids) in &expected {
        let got = receiver.ids_on(path);
        if &got != ids {
            wrong.push(format!("{path}: expected {ids:?}, got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "wrong deliveries:\n{}", wrong.join("\n"));

    // The deliveries endpoint lists each event once, newest first.
    let listed = deliveries(&server, &ttd, subscription_ids["/all"], None).await;
    let listed_events: BTreeSet<String> = listed
        .iter()
        .filter_map(|d| d["eventId"].as_str())
        .filter(|e| e.starts_with('m'))
        .map(str::to_owned)
        .collect();
    assert_eq!(listed_events, expected["/all"], "{listed:?}");
    let delivery_ids: Vec<i64> = listed
        .iter()
        .map(|d| d["id"].as_i64().expect("id"))
        .collect();
    assert!(
        delivery_ids.windows(2).all(|w| w[0] > w[1]),
        "newest first: {delivery_ids:?}"
    );
    assert!(
        listed.iter().all(|d| d["state"] == "delivered"),
        "all delivered: {listed:?}"
    );

    // Delivered as published, byte for byte, as application/cloudevents+json.
    for hit in receiver.deliveries_on("/all") {
        let published = events
            .iter()
            .find(|e| e["id"] == hit.event_id())
            .expect("a published event");
        assert_eq!(
            std::str::from_utf8(&hit.body).expect("utf8"),
            published.to_string(),
            "body of {}",
            hit.event_id()
        );
        assert!(
            hit.header("content-type")
                .is_some_and(|c| c.starts_with("application/cloudevents+json")),
            "content-type {:?}",
            hit.header("content-type")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3-5. Failures, retries and dead letters.
// ---------------------------------------------------------------------------------------------

/// The receiver goes away (connection refused), comes back answering 500, then 200: every event
/// arrives, each delivery keeps its `webhook-id` across attempts, and the deliveries endpoint
/// shows the failed attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreliable_receiver_gets_every_event_with_a_stable_webhook_id() {
    // A slower ladder than usual, so that the receiver can come back between attempts.
    let server = Server::start_delivering(&["--retry-schedule", "1s,1s,1s,1s,1s,1s"]);
    let mut receiver = Receiver::start().await;
    let ttd = server.ttd();
    let id = subscribe_to(&server, &ttd, &receiver.url("/flaky")).await;
    wait_validated(&server, &ttd, id).await;

    receiver.stop().await;
    let ids: BTreeSet<String> = (0..5).map(|i| format!("flaky-{i}")).collect();
    for event_id in &ids {
        publish_ok(&server, &ttd, &generic_event(event_id)).await;
    }
    // Every delivery has had its first (refused) attempt.
    eventually(
        "a refused first attempt of each delivery",
        PATIENCE,
        async || {
            let list = deliveries(&server, &ttd, id, None).await;
            let tried = ids
                .iter()
                .filter(|e| {
                    delivery_of(&list, e).is_some_and(|d| d["attempts"].as_u64() >= Some(1))
                })
                .count();
            if tried == ids.len() {
                Ok(())
            } else {
                Err(serde_json::to_string(&list).unwrap_or_default())
            }
        },
    )
    .await;
    // Back, answering 500 to the first request of each event and 200 after that.
    receiver.script_deliveries(|hit| {
        if hit.attempt > 1 {
            Reply::ok()
        } else {
            Reply::status(500)
        }
    });
    receiver.restart().await;
    wait_accepted(&receiver, "/flaky", &ids, PATIENCE).await;

    let hits = receiver.deliveries_on("/flaky");
    for event_id in &ids {
        let attempts: Vec<&Hit> = hits.iter().filter(|h| h.event_id() == event_id).collect();
        assert!(
            attempts.iter().any(|h| h.status == 500) && attempts.iter().any(|h| h.status == 200),
            "{event_id}: a 500 and then a 200"
        );
        let webhook_ids: BTreeSet<Option<&str>> = attempts.iter().map(|h| h.webhook_id()).collect();
        assert_eq!(
            webhook_ids.len(),
            1,
            "{event_id}: one webhook-id across attempts, got {webhook_ids:?}"
        );
        assert!(
            webhook_ids.iter().all(Option::is_some),
            "{event_id}: webhook-id sent"
        );
    }

    let list = eventually(
        "every delivery recorded as delivered",
        PATIENCE,
        async || {
            let list = deliveries(&server, &ttd, id, None).await;
            if ids
                .iter()
                .all(|e| delivery_of(&list, e).is_some_and(|d| d["state"] == "delivered"))
            {
                Ok(list)
            } else {
                Err(serde_json::to_string(&list).unwrap_or_default())
            }
        },
    )
    .await;
    let mut refused_seen = false;
    for event_id in &ids {
        let d = delivery_of(&list, event_id).expect("listed");
        let history = d["history"].as_array().expect("history");
        let received = hits
            .iter()
            .find(|h| h.event_id() == event_id)
            .and_then(Hit::webhook_id)
            .expect("webhook-id");
        assert_eq!(d["webhookId"], received, "webhookId of {event_id}: {d}");
        assert!(
            history.iter().any(|h| h["status"] == 500),
            "{event_id}: the 500 is in the history: {d}"
        );
        assert!(
            history.iter().any(|h| h["status"] == 200),
            "{event_id}: the 200 is in the history: {d}"
        );
        assert!(
            d["attempts"].as_u64() >= Some(3),
            "{event_id}: refused, 500, 200: {d}"
        );
        assert_eq!(d["attempts"].as_u64(), Some(history.len() as u64), "{d}");
        refused_seen |= history
            .iter()
            .any(|h| h["status"].is_null() && h["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    assert!(
        refused_seen,
        "the connection errors are in the history: {}",
        serde_json::to_string_pretty(&list).unwrap_or_default()
    );
    // Failed attempts are logged at the default level, successful ones only at debug.
    let log = server.log();
    assert!(
        !log.contains('\u{1b}'),
        "a log that is not a terminal has no colour codes"
    );
    assert!(
        log.contains("outcome=RetryAt"),
        "failures are logged: {log}"
    );
    assert!(
        !log.contains("outcome=Delivered"),
        "successes are not logged at info: {log}"
    );
}

/// 429 with `Retry-After` is retried; 410 is not and disables the subscription; 400, 401, 403 and
/// 413 are dead-lettered at once, and a redrive delivers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statuses_that_stop_retries_dead_letter_and_redrive_delivers() {
    let server = push_server(&[]);
    let receiver = Receiver::start().await;
    let ttd = server.ttd();
    let heal = Arc::new(AtomicBool::new(false));
    {
        let heal = heal.clone();
        receiver.script_deliveries(move |hit| match hit.path.as_str() {
            "/r429" if hit.attempt == 1 => Reply::status(429).header("retry-after", "1"),
            "/r410" => Reply::status(410),
            "/r400" | "/r401" | "/r403" | "/r413" if !heal.load(Ordering::SeqCst) => {
                Reply::status(hit.path[2..].parse().expect("status"))
            }
            _ => Reply::ok(),
        });
    }
    let mut ids = BTreeMap::new();
    for path in [
        "/r429", "/r410", "/r400", "/r401", "/r403", "/r413", "/control",
    ] {
        let id = subscribe_to(&server, &ttd, &receiver.url(path)).await;
        wait_validated(&server, &ttd, id).await;
        ids.insert(path, id);
    }

    publish_ok(&server, &ttd, &generic_event("q1")).await;
    let q1: BTreeSet<String> = ["q1".to_owned()].into();
    wait_accepted(&receiver, "/control", &q1, PATIENCE).await;
    wait_accepted(&receiver, "/r429", &q1, PATIENCE).await;
    let r429 = eventually("q1 delivered after the 429", PATIENCE, async || {
        let list = deliveries(&server, &ttd, ids["/r429"], None).await;
        match delivery_of(&list, "q1") {
            Some(d) if d["state"] == "delivered" => Ok(d.clone()),
            _ => Err(serde_json::to_string(&list).unwrap_or_default()),
        }
    })
    .await;
    assert!(
        r429["history"]
            .as_array()
            .is_some_and(|h| h.iter().any(|a| a["status"] == 429)),
        "the 429 is in the history: {r429}"
    );

    // 410: one attempt, dead, subscription disabled.
    let gone = eventually("the 410 subscription disabled", PATIENCE, async || {
        let answer = get_subscription(&server, &ttd, ids["/r410"]).await;
        if answer.body["enabled"] == false {
            Ok(answer.body)
        } else {
            Err(answer.text)
        }
    })
    .await;
    assert_eq!(gone["id"], ids["/r410"]);
    // 400, 401, 403, 413 (and 410): dead at once, after one attempt.
    for path in ["/r410", "/r400", "/r401", "/r403", "/r413"] {
        let dead = eventually(&format!("q1 dead at {path}"), PATIENCE, async || {
            let list = deliveries(&server, &ttd, ids[path], Some("dead")).await;
            delivery_of(&list, "q1")
                .cloned()
                .ok_or_else(|| serde_json::to_string(&list).unwrap_or_default())
        })
        .await;
        assert_eq!(dead["state"], "dead", "{path}: {dead}");
        assert_eq!(dead["attempts"], 1, "{path}: not retried: {dead}");
        assert_eq!(
            dead["lastStatus"],
            path[2..].parse::<u16>().expect("status"),
            "{dead}"
        );
        assert!(
            deliveries(&server, &ttd, ids[path], Some("pending"))
                .await
                .is_empty(),
            "{path}: nothing pending"
        );
    }

    publish_ok(&server, &ttd, &generic_event("q2")).await;
    let q2: BTreeSet<String> = ["q2".to_owned()].into();
    wait_accepted(&receiver, "/control", &q2, PATIENCE).await;
    for path in ["/r400", "/r401", "/r403", "/r413"] {
        eventually(&format!("q2 dead at {path}"), PATIENCE, async || {
            let list = deliveries(&server, &ttd, ids[path], Some("dead")).await;
            delivery_of(&list, "q2")
                .map(|_| ())
                .ok_or_else(|| serde_json::to_string(&list).unwrap_or_default())
        })
        .await;
    }
    tokio::time::sleep(QUIET).await;
    for path in ["/r400", "/r401", "/r403", "/r413", "/r410"] {
        let q1_attempts = receiver
            .deliveries_on(path)
            .iter()
            .filter(|h| h.event_id() == "q1")
            .count();
        assert_eq!(q1_attempts, 1, "{path}: q1 was retried");
    }
    assert!(
        !receiver.ids_on("/r410").contains("q2"),
        "a disabled subscription got a new event"
    );

    // Redrive: the receiver answers 200 now; both dead letters are sent again and delivered.
    heal.store(true, Ordering::SeqCst);
    let answer = redrive(&server, &ttd, ids["/r400"]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["requeued"], 2, "{}", answer.text);
    let both: BTreeSet<String> = ["q1".to_owned(), "q2".to_owned()].into();
    wait_accepted(&receiver, "/r400", &both, PATIENCE).await;
    eventually("both redriven deliveries delivered", PATIENCE, async || {
        let delivered = deliveries(&server, &ttd, ids["/r400"], Some("delivered")).await;
        let dead = deliveries(&server, &ttd, ids["/r400"], Some("dead")).await;
        if delivery_of(&delivered, "q1").is_some()
            && delivery_of(&delivered, "q2").is_some()
            && dead.is_empty()
        {
            Ok(delivered)
        } else {
            Err(format!("delivered {delivered:?}, dead {dead:?}"))
        }
    })
    .await
    .into_iter()
    .filter(|d| d["eventId"] == "q1" || d["eventId"] == "q2")
    .for_each(|d| {
        assert_eq!(d["attempts"], 1, "attempts reset by the redrive: {d}");
        assert_eq!(d["lastStatus"], 200, "{d}");
        assert!(
            d["history"]
                .as_array()
                .is_some_and(|h| h.iter().any(|a| a["status"] == 400)),
            "the history keeps the 400: {d}"
        );
    });
    // Nothing dead any more: a second redrive requeues nothing, and nothing is sent again.
    let again = redrive(&server, &ttd, ids["/r400"]).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body["requeued"], 0, "{}", again.text);
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        receiver
            .deliveries_on("/r400")
            .iter()
            .filter(|h| h.status == 200)
            .count(),
        2,
        "each redriven delivery sent once"
    );
    // Redriving someone else's subscription is not possible.
    assert_problem(
        &redrive(&server, &server.person(), ids["/r401"]).await,
        404,
        &[],
        "redrive by another subscriber",
    );
}

/// A receiver that always fails gets the whole ladder (4 attempts with the test ladder) and the
/// delivery is then dead; redirects are not followed; timeouts count as failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_is_dead_lettered_after_the_whole_ladder() {
    let server = push_server(&["--webhook-timeout", "1"]);
    let receiver = Receiver::start().await;
    let ttd = server.ttd();
    let elsewhere = receiver.url("/elsewhere");
    receiver.script_deliveries(move |hit| match hit.path.as_str() {
        "/always500" => Reply::status(500),
        "/always503" => Reply::status(503),
        "/redirect" => Reply::status(302).header("location", &elsewhere),
        "/slow" => Reply::ok().delay(Duration::from_secs(3)),
        _ => Reply::ok(),
    });
    let mut ids = BTreeMap::new();
    for path in ["/always500", "/always503", "/redirect", "/slow"] {
        let id = subscribe_to(&server, &ttd, &receiver.url(path)).await;
        wait_validated(&server, &ttd, id).await;
        ids.insert(path, id);
    }
    publish_ok(&server, &ttd, &generic_event("doomed")).await;

    for (path, last_status) in [
        ("/always500", Some(500)),
        ("/always503", Some(503)),
        ("/redirect", Some(302)),
        ("/slow", None),
    ] {
        let dead = eventually(&format!("doomed dead at {path}"), PATIENCE, async || {
            let list = deliveries(&server, &ttd, ids[path], Some("dead")).await;
            delivery_of(&list, "doomed")
                .cloned()
                .ok_or_else(|| serde_json::to_string(&list).unwrap_or_default())
        })
        .await;
        assert_eq!(dead["attempts"], 4, "{path}: the whole ladder: {dead}");
        let history = dead["history"].as_array().expect("history");
        assert_eq!(history.len(), 4, "{path}: {dead}");
        match last_status {
            Some(status) => {
                assert_eq!(dead["lastStatus"], status, "{path}: {dead}");
                assert!(
                    history.iter().all(|h| h["status"] == status),
                    "{path}: {dead}"
                );
            }
            None => assert!(
                dead["lastError"].as_str().is_some_and(|e| !e.is_empty()),
                "{path}: a timeout is an error: {dead}"
            ),
        }
        let hits = receiver.deliveries_on(path);
        assert_eq!(hits.len(), 4, "{path}: four requests");
        let webhook_ids: BTreeSet<Option<&str>> = hits.iter().map(Hit::webhook_id).collect();
        assert_eq!(
            webhook_ids.len(),
            1,
            "{path}: one webhook-id: {webhook_ids:?}"
        );
        assert_eq!(dead["webhookId"].as_str(), hits[0].webhook_id(), "{dead}");
    }
    tokio::time::sleep(QUIET).await;
    assert!(
        receiver.hits_on("/elsewhere").is_empty(),
        "a redirect was followed"
    );
    for path in ["/always500", "/always503", "/redirect"] {
        assert_eq!(
            receiver.deliveries_on(path).len(),
            4,
            "{path}: nothing after dead"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Signatures.
// ---------------------------------------------------------------------------------------------

/// With a secret, the handshake and every delivery verify with the independent `standardwebhooks`
/// crate (and fail with another secret); without one, `webhook-id` is still sent but no signature.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_carry_standard_webhooks_signatures() {
    let server = push_server(&[]);
    let receiver = Receiver::start().await;
    let ttd = server.ttd();
    let secret = secret_of(32);
    let signed = create_subscription(
        &server,
        &ttd,
        &json!({"endPoint": receiver.url("/signed"), "resourceFilter": RESOURCE, "secret": secret}),
    )
    .await;
    assert_eq!(signed.status, 201, "{}", signed.text);
    assert_eq!(signed.body["hasSecret"], true, "{}", signed.text);
    let secret_b64 = secret.trim_start_matches("whsec_");
    assert!(
        !signed.text.contains(secret_b64),
        "the secret is never returned: {}",
        signed.text
    );
    let signed_id = id_of(&signed.body);
    let plain = subscribe(
        &server,
        &ttd,
        &json!({"endPoint": receiver.url("/plain"), "resourceFilter": RESOURCE}),
    )
    .await;
    assert_eq!(plain["hasSecret"], false, "{plain}");
    wait_validated(&server, &ttd, signed_id).await;
    wait_validated(&server, &ttd, id_of(&plain)).await;
    for answer in [
        get_subscription(&server, &ttd, signed_id).await,
        call(
            reqwest::Method::GET,
            &server.at(SUBSCRIPTIONS),
            Some(&ttd),
            None,
        )
        .await,
    ] {
        assert!(!answer.text.contains(secret_b64), "{}", answer.text);
    }

    let events: Vec<Value> = (0..3)
        .map(|i| {
            let mut e = generic_event(&format!("sig-{i}"));
            e["data"] = json!({"text": "æøå \u{1F600} \"quoted\"", "n": i});
            e
        })
        .collect();
    for e in &events {
        publish_ok(&server, &ttd, e).await;
    }
    let ids: BTreeSet<String> = (0..3).map(|i| format!("sig-{i}")).collect();
    wait_accepted(&receiver, "/signed", &ids, PATIENCE).await;
    wait_accepted(&receiver, "/plain", &ids, PATIENCE).await;

    let webhook = standardwebhooks::Webhook::new(&secret).expect("secret");
    let impostor = standardwebhooks::Webhook::new(&secret_of(32)).expect("secret");
    let hits = receiver.hits_on("/signed");
    assert!(
        hits.iter().any(Hit::is_validation),
        "the handshake went to /signed"
    );
    for hit in &hits {
        let what = format!("{} ({})", hit.event_id(), hit.event["type"]);
        webhook.verify(&hit.body, &hit.headers).unwrap_or_else(|e| {
            panic!(
                "{what}: signature does not verify: {e}; headers {:?}",
                hit.headers
            )
        });
        assert!(
            impostor.verify(&hit.body, &hit.headers).is_err(),
            "{what}: verifies with another secret too"
        );
        let mut tampered = hit.body.to_vec();
        tampered.push(b' ');
        assert!(
            webhook.verify(&tampered, &hit.headers).is_err(),
            "{what}: verifies with another body"
        );
        let signature = hit.header("webhook-signature").expect("signature");
        assert!(signature.starts_with("v1,"), "{what}: {signature}");
        let timestamp: i64 = hit
            .header("webhook-timestamp")
            .expect("timestamp")
            .parse()
            .expect("unix seconds");
        assert!(timestamp > 1_600_000_000, "{what}: {timestamp}");
    }
    for hit in receiver.deliveries_on("/signed") {
        let published = events
            .iter()
            .find(|e| e["id"] == hit.event_id())
            .expect("published");
        assert_eq!(
            std::str::from_utf8(&hit.body).expect("utf8"),
            published.to_string(),
            "signed body is the event as published"
        );
    }
    // Different deliveries have different webhook-ids.
    let distinct: BTreeSet<String> = receiver
        .deliveries_on("/signed")
        .iter()
        .filter_map(Hit::webhook_id)
        .map(str::to_owned)
        .collect();
    assert_eq!(
        distinct.len(),
        3,
        "one webhook-id per delivery: {distinct:?}"
    );

    for hit in receiver.hits_on("/plain") {
        assert!(hit.webhook_id().is_some(), "webhook-id is sent always");
        assert!(
            hit.header("webhook-signature").is_none(),
            "no signature without a secret"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 7-8. Durability and several workers.
// ---------------------------------------------------------------------------------------------

/// `kill -9` while 1,000 deliveries are pending (the receiver holds every request open, so none
/// is acknowledged): after a restart on the same data directory all 1,000 arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pending_deliveries_survive_kill_9() {
    const EVENTS: usize = 1000;
    const BATCH: usize = 100;
    let mut server = push_server(&["--webhook-timeout", "5"]);
    let receiver = Receiver::start().await;
    let ttd = server.ttd();
    let id = subscribe_to(&server, &ttd, &receiver.url("/durable")).await;
    wait_validated(&server, &ttd, id).await;

    // Phase 0: every delivery is held open (never acknowledged). Phase 1: 200.
    let gate = Gate::new();
    {
        let gate = gate.clone();
        receiver.script_deliveries(move |hit| {
            if hit.phase == 0 {
                Reply::status(503).after(&gate)
            } else {
                Reply::ok()
            }
        });
    }
    let ids: Vec<String> = (0..EVENTS).map(|i| format!("durable-{i:04}")).collect();
    for chunk in ids.chunks(BATCH) {
        let batch: Vec<Value> = chunk.iter().map(|id| generic_event(id)).collect();
        publish_batch_ok(&server, &ttd, &batch).await;
    }
    eventually("deliveries in flight", PATIENCE, async || {
        let n = receiver.deliveries_on("/durable").len();
        if n > 0 {
            Ok(())
        } else {
            Err("none yet".to_owned())
        }
    })
    .await;
    let pending = deliveries(&server, &ttd, id, Some("pending")).await.len();
    eprintln!(
        "killing with {} requests held open and {pending} deliveries listed pending",
        receiver.deliveries_on("/durable").len()
    );
    server.kill9();
    receiver.set_phase(1);
    gate.open();
    server.restart();

    let all: BTreeSet<String> = ids.iter().cloned().collect();
    eventually(
        "every event delivered after the restart",
        Duration::from_secs(120),
        async || {
            let accepted: BTreeSet<String> = receiver
                .deliveries_on("/durable")
                .iter()
                .filter(|h| h.phase == 1 && h.status == 200)
                .map(|h| h.event_id().to_owned())
                .collect();
            let missing = all.difference(&accepted).count();
            if missing == 0 {
                Ok(())
            } else {
                Err(format!("{missing} of {EVENTS} missing"))
            }
        },
    )
    .await;
    let hits = receiver.deliveries_on("/durable");
    let after_restart = hits.iter().filter(|h| h.phase == 1).count();
    eprintln!(
        "kill -9: {} requests in all, {after_restart} after the restart for {EVENTS} events: {} duplicates after the restart, {} in all",
        hits.len(),
        after_restart - EVENTS,
        hits.len() - EVENTS
    );
    let delivered = eventually(
        "every delivery recorded as delivered",
        PATIENCE,
        async || {
            let delivered = deliveries(&server, &ttd, id, Some("delivered"))
                .await
                .iter()
                .filter(|d| {
                    d["eventId"]
                        .as_str()
                        .is_some_and(|e| e.starts_with("durable-"))
                })
                .count();
            if delivered == EVENTS {
                Ok(delivered)
            } else {
                Err(format!("{delivered} delivered"))
            }
        },
    )
    .await;
    assert_eq!(delivered, EVENTS);
}

/// The dispatching node matches through an index of the subscriptions it builds once; a
/// subscription created on another node after that is matched from the next event on, and one
/// deleted there is not: nothing is missed across nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_changed_on_another_node_count_from_the_next_event() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let api = push_server(&["--database-url", &db.url, "--no-push"]);
    let dispatching = Server::start_beside(&api, &push_args(&["--database-url", &db.url]));
    let receiver = Receiver::start().await;
    let ttd = api.ttd();
    let ids = |id: &str| -> BTreeSet<String> { [id.to_owned()].into() };

    let first = subscribe_to(&api, &ttd, &receiver.url("/first")).await;
    wait_validated(&api, &ttd, first).await;
    publish_ok(&dispatching, &ttd, &generic_event("ix-1")).await;
    wait_accepted(&receiver, "/first", &ids("ix-1"), PATIENCE).await;

    let second = subscribe_to(&api, &ttd, &receiver.url("/second")).await;
    wait_validated(&api, &ttd, second).await;
    publish_ok(&dispatching, &ttd, &generic_event("ix-2")).await;
    wait_accepted(&receiver, "/second", &ids("ix-2"), PATIENCE).await;

    assert_eq!(delete_subscription(&api, &ttd, second).await.status, 200);
    publish_ok(&dispatching, &ttd, &generic_event("ix-3")).await;
    wait_accepted(&receiver, "/first", &ids("ix-3"), PATIENCE).await;
    assert!(
        !receiver.ids_on("/second").contains("ix-3"),
        "a subscription deleted on another node still got an event"
    );
    drop((api, dispatching));
    db.drop_database().await;
}

/// Two nodes on one PostgreSQL database deliver to one receiver: every event arrives, and no
/// delivery (`webhook-id`) is ever in flight twice at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_never_send_one_delivery_twice_at_once() {
    const PUBLISHERS: usize = 4;
    const PER_PUBLISHER: usize = 75;
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let a = push_server(&["--database-url", &db.url]);
    let b = Server::start_beside(&a, &push_args(&["--database-url", &db.url]));
    let receiver = Receiver::start().await;
    // Slow enough to overlap a second sender, and a 500 now and then to exercise retries.
    receiver.script_deliveries(|hit| {
        let n: usize = hit
            .event_id()
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let delay = Duration::from_millis(10 + (n % 4) as u64 * 10);
        if n.is_multiple_of(7) && hit.attempt == 1 {
            Reply::status(500).delay(delay)
        } else {
            Reply::ok().delay(delay)
        }
    });
    let ttd = a.ttd();
    let id = subscribe_to(&a, &ttd, &receiver.url("/nodes")).await;
    wait_validated(&b, &ttd, id).await;

    let publishers = Swarm::start(
        &[&a, &b],
        &ttd,
        PUBLISHERS,
        PER_PUBLISHER,
        "node-p",
        Swarm::must_succeed,
    );
    let all: BTreeSet<String> = common::acknowledged(&publishers.join().await)
        .into_iter()
        .collect();
    assert_eq!(all.len(), PUBLISHERS * PER_PUBLISHER);
    wait_accepted(&receiver, "/nodes", &all, Duration::from_secs(90)).await;
    tokio::time::sleep(QUIET).await;

    let hits = receiver.deliveries_on("/nodes");
    let accepted = hits.iter().filter(|h| h.status == 200).count();
    eprintln!(
        "two nodes: {} requests, {accepted} answered 200 for {} events ({} duplicate 200s)",
        hits.len(),
        all.len(),
        accepted - all.len()
    );
    assert!(
        hits.iter().all(|h| h.webhook_id().is_some()),
        "webhook-id is sent always"
    );
    let overlaps = receiver.overlaps();
    assert!(
        overlaps.is_empty(),
        "deliveries in flight twice at the same time: {overlaps:?}"
    );
    drop((a, b));
    db.drop_database().await;
}

/// A failing validation handshake is retried on the ladder (with one `webhook-id`); the
/// subscription gets no events until a 2xx, then the ones published meanwhile. A handshake that
/// fails on every attempt is dead-lettered, the subscription stays unvalidated and gets nothing,
/// until a redrive validates it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_validation_handshake_is_retried_and_gates_delivery() {
    let server = push_server(&[]);
    let receiver = Receiver::start().await;
    let ttd = server.ttd();
    let late_tries = Arc::new(AtomicUsize::new(0));
    let never_heals = Arc::new(AtomicBool::new(false));
    {
        let (late_tries, never_heals) = (late_tries.clone(), never_heals.clone());
        receiver.script(move |hit| {
            if !hit.is_validation() {
                return Reply::ok();
            }
            match hit.path.as_str() {
                "/late" if late_tries.fetch_add(1, Ordering::SeqCst) < 2 => Reply::status(503),
                "/never" if !never_heals.load(Ordering::SeqCst) => Reply::status(500),
                _ => Reply::ok(),
            }
        });
    }
    let late = subscribe_to(&server, &ttd, &receiver.url("/late")).await;
    let never = subscribe_to(&server, &ttd, &receiver.url("/never")).await;
    publish_ok(&server, &ttd, &generic_event("gate-1")).await;
    wait_validated(&server, &ttd, late).await;
    let gate_1: BTreeSet<String> = ["gate-1".to_owned()].into();
    wait_accepted(&receiver, "/late", &gate_1, PATIENCE).await;
    let handshakes: Vec<Hit> = receiver
        .hits_on("/late")
        .into_iter()
        .filter(Hit::is_validation)
        .collect();
    assert_eq!(
        handshakes.iter().map(|h| h.status).collect::<Vec<_>>(),
        [503, 503, 200],
        "the handshake retried until its 2xx"
    );
    let first_delivery = receiver
        .deliveries_on("/late")
        .first()
        .map(|h| h.at)
        .expect("a delivery");
    assert!(
        handshakes.iter().all(|h| h.at <= first_delivery),
        "an event was delivered before the handshake succeeded"
    );
    let webhook_ids: BTreeSet<Option<&str>> = handshakes.iter().map(Hit::webhook_id).collect();
    assert_eq!(
        webhook_ids.len(),
        1,
        "one webhook-id across the handshake's attempts: {webhook_ids:?}"
    );

    // /never: four attempts, then dead; never validated, no events.
    eventually("the handshake dead-lettered", PATIENCE, async || {
        let dead = deliveries(&server, &ttd, never, Some("dead")).await;
        if dead.is_empty() {
            Err(format!(
                "{:?}",
                deliveries(&server, &ttd, never, None).await
            ))
        } else {
            Ok(())
        }
    })
    .await;
    publish_ok(&server, &ttd, &generic_event("gate-2")).await;
    let gate_2: BTreeSet<String> = ["gate-2".to_owned()].into();
    wait_accepted(&receiver, "/late", &gate_2, PATIENCE).await;
    tokio::time::sleep(QUIET).await;
    let never_hits = receiver.hits_on("/never");
    assert_eq!(
        never_hits.len(),
        4,
        "the handshake's whole ladder and nothing else: {:?}",
        never_hits.iter().map(|h| h.event_id()).collect::<Vec<_>>()
    );
    assert!(never_hits.iter().all(Hit::is_validation));
    let answer = get_subscription(&server, &ttd, never).await;
    assert_eq!(answer.body["validated"], false, "{}", answer.text);

    // Redriven with the endpoint healed: validated, and gate-1 (queued before the handshake was
    // dead) arrives. (gate-2, published while it was dead: see the next test.)
    never_heals.store(true, Ordering::SeqCst);
    let answer = redrive(&server, &ttd, never).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(
        answer.body["requeued"].as_u64() >= Some(1),
        "the handshake is requeued: {}",
        answer.text
    );
    wait_validated(&server, &ttd, never).await;
    wait_accepted(&receiver, "/never", &gate_1, PATIENCE).await;
}

/// Events published after creation and before validation are delivered after it, also when the
/// handshake was dead-lettered in between and only a redrive validates the subscription: nothing
/// published meanwhile is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_published_while_the_handshake_is_dead_are_delivered_after_a_redrive() {
    let server = push_server(&[]);
    let receiver = Receiver::start().await;
    let ttd = server.ttd();
    let healed = Arc::new(AtomicBool::new(false));
    {
        let healed = healed.clone();
        receiver.script(move |hit| {
            if hit.is_validation() && !healed.load(Ordering::SeqCst) {
                Reply::status(500)
            } else {
                Reply::ok()
            }
        });
    }
    let id = subscribe_to(&server, &ttd, &receiver.url("/revived")).await;
    eventually("the handshake dead-lettered", PATIENCE, async || {
        let dead = deliveries(&server, &ttd, id, Some("dead")).await;
        if dead.is_empty() {
            Err(format!("{:?}", deliveries(&server, &ttd, id, None).await))
        } else {
            Ok(())
        }
    })
    .await;
    publish_ok(&server, &ttd, &generic_event("while-dead")).await;
    tokio::time::sleep(QUIET).await;
    assert!(receiver.deliveries_on("/revived").is_empty());

    healed.store(true, Ordering::SeqCst);
    let answer = redrive(&server, &ttd, id).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    wait_validated(&server, &ttd, id).await;
    let expected: BTreeSet<String> = ["while-dead".to_owned()].into();
    wait_accepted(&receiver, "/revived", &expected, PATIENCE).await;
}

/// A `--no-push` node manages subscriptions and takes events but sends nothing; another node on
/// the same PostgreSQL database validates and delivers, also the events published on the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_no_push_node_sends_nothing_and_another_node_delivers() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let quiet = push_server(&["--database-url", &db.url, "--no-push"]);
    let receiver = Receiver::start().await;
    let ttd = quiet.ttd();
    let id = subscribe_to(&quiet, &ttd, &receiver.url("/np")).await;
    publish_ok(&quiet, &ttd, &generic_event("np-1")).await;
    tokio::time::sleep(QUIET).await;
    assert!(
        receiver.hits().is_empty(),
        "a --no-push node sent something: {:?}",
        receiver.hits()
    );
    assert_eq!(
        get_subscription(&quiet, &ttd, id).await.body["validated"],
        false
    );

    let mut worker = Server::start_beside(&quiet, &push_args(&["--database-url", &db.url]));
    wait_validated(&quiet, &ttd, id).await;
    let np_1: BTreeSet<String> = ["np-1".to_owned()].into();
    wait_accepted(&receiver, "/np", &np_1, PATIENCE).await;
    publish_ok(&quiet, &ttd, &generic_event("np-2")).await;
    let np_2: BTreeSet<String> = ["np-2".to_owned()].into();
    wait_accepted(&receiver, "/np", &np_2, PATIENCE).await;

    // Without a delivering node nothing is sent; when one is back, the event arrives.
    worker.kill9();
    publish_ok(&quiet, &ttd, &generic_event("np-3")).await;
    tokio::time::sleep(QUIET).await;
    assert!(
        !receiver.ids_on("/np").contains("np-3"),
        "np-3 was sent while only the --no-push node ran"
    );
    worker.restart();
    let np_3: BTreeSet<String> = ["np-3".to_owned()].into();
    wait_accepted(&receiver, "/np", &np_3, PATIENCE).await;
    drop((quiet, worker));
    db.drop_database().await;
}

/// The event ids of a batch delivery, in the order the POST carried them.
fn batch_ids(hit: &Hit) -> Vec<String> {
    hit.event
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| e["id"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A subscription with `maxEventsPerBatch` gets its events as `application/cloudevents-batch+json`
/// arrays of at most that many, signed as a whole; a failed batch is retried with the same
/// `webhook-id` and the same events; a dead batch is listed once with its count and a redrive
/// sends the same events again; `maxWaitMs` lets events published one by one share a batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_are_retried_dead_lettered_and_redriven_whole() {
    let server = push_server(&[]);
    let receiver = Receiver::start().await;
    let ttd = server.ttd();
    let secret = secret_of(32);
    let heal = Arc::new(AtomicBool::new(false));
    let tries = Arc::new(std::sync::Mutex::new(BTreeMap::<String, usize>::new()));
    {
        let (heal, tries) = (heal.clone(), tries.clone());
        receiver.script_deliveries(move |hit| {
            let id = hit.webhook_id().unwrap_or("").to_owned();
            let mut tries = tries.lock().expect("tries");
            let n = tries.entry(id).or_insert(0);
            *n += 1;
            match hit.path.as_str() {
                "/flaky" if *n == 1 => Reply::status(500),
                "/dead" if !heal.load(Ordering::SeqCst) => Reply::status(503),
                _ => Reply::ok(),
            }
        });
    }
    let mut ids = BTreeMap::new();
    for (path, batch, wait) in [("/flaky", 4, 0), ("/dead", 4, 0), ("/wait", 10, 5000)] {
        let body = json!({
            "endPoint": receiver.url(path), "resourceFilter": RESOURCE, "secret": secret,
            "maxEventsPerBatch": batch, "maxWaitMs": wait,
        });
        let created = subscribe(&server, &ttd, &body).await;
        assert_eq!(created["maxEventsPerBatch"], batch, "{created}");
        assert_eq!(created["maxWaitMs"], wait, "{created}");
        wait_validated(&server, &ttd, id_of(&created)).await;
        ids.insert(path, id_of(&created));
    }
    for (body, what) in [
        (json!({"maxEventsPerBatch": 0}), "maxEventsPerBatch"),
        (json!({"maxEventsPerBatch": 1001}), "maxEventsPerBatch"),
        (
            json!({"maxEventsPerBatch": 5, "maxWaitMs": 60001}),
            "maxWaitMs",
        ),
        (json!({"maxWaitMs": 100}), "maxWaitMs"),
    ] {
        let mut request = json!({"endPoint": receiver.url("/x"), "resourceFilter": RESOURCE});
        request.as_object_mut().expect("object").extend(
            body.as_object()
                .expect("object")
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        let answer = create_subscription(&server, &ttd, &request).await;
        assert_problem(&answer, 400, &[what], &request.to_string());
    }

    let events: Vec<Value> = (0..10).map(|i| generic_event(&format!("b{i}"))).collect();
    let published: Vec<String> = (0..10).map(|i| format!("b{i}")).collect();
    publish_batch_ok(&server, &ttd, &events).await;

    // /flaky: every batch fails once and is sent again whole; together they carry each event
    // once, in log order.
    let flaky = eventually("the batches delivered at /flaky", PATIENCE, async || {
        let accepted: Vec<Hit> = receiver
            .deliveries_on("/flaky")
            .into_iter()
            .filter(|h| h.status == 200)
            .collect();
        let carried: usize = accepted.iter().map(|h| batch_ids(h).len()).sum();
        if carried >= published.len() {
            Ok(accepted)
        } else {
            Err(format!("{carried} events accepted"))
        }
    })
    .await;
    let delivered: Vec<String> = flaky.iter().flat_map(batch_ids).collect();
    let mut in_order = delivered.clone();
    in_order.sort_by_key(|id| id[1..].parse::<u32>().unwrap_or(u32::MAX));
    assert_eq!(delivered.len(), published.len(), "each once: {delivered:?}");
    assert_eq!(in_order, published, "every event: {delivered:?}");
    let webhook = standardwebhooks::Webhook::new(&secret).expect("secret");
    for hit in receiver.deliveries_on("/flaky") {
        assert_eq!(
            hit.header("content-type"),
            Some("application/cloudevents-batch+json"),
            "{:?}",
            hit.headers
        );
        let carried = batch_ids(&hit);
        assert!(
            (1..=4).contains(&carried.len()),
            "at most 4 a batch: {carried:?}"
        );
        let mut sorted = carried.clone();
        sorted.sort_by_key(|id| id[1..].parse::<u32>().unwrap_or(u32::MAX));
        assert_eq!(sorted, carried, "a batch is in log order");
        webhook
            .verify(&hit.body, &hit.headers)
            .unwrap_or_else(|e| panic!("batch {carried:?} does not verify: {e}"));
        let again: Vec<Hit> = receiver
            .deliveries_on("/flaky")
            .into_iter()
            .filter(|h| h.webhook_id() == hit.webhook_id())
            .collect();
        assert_eq!(again.len(), 2, "one failure and one retry of {carried:?}");
        assert_eq!(
            again[0].event, again[1].event,
            "the retry is the same events"
        );
    }
    let listed = eventually(
        "the /flaky deliveries listed delivered",
        PATIENCE,
        async || {
            let list = deliveries(&server, &ttd, ids["/flaky"], None).await;
            if list.iter().all(|d| d["state"] == "delivered") {
                Ok(list)
            } else {
                Err(serde_json::to_string(&list).unwrap_or_default())
            }
        },
    )
    .await;
    let batches: Vec<&Value> = listed
        .iter()
        // Not the handshake, whose id is a UUID that may start with a `b` too.
        .filter(|d| {
            d["eventId"]
                .as_str()
                .and_then(|id| id.strip_prefix('b'))
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .collect();
    assert_eq!(
        batches
            .iter()
            .filter_map(|d| d["eventCount"].as_i64())
            .sum::<i64>(),
        10,
        "the batches' counts add up: {listed:?}"
    );
    assert!(
        batches.iter().all(|d| d["attempts"] == 2),
        "each batch took two attempts: {listed:?}"
    );

    // /dead: every batch ends as a dead letter; a redrive sends the same events again, under the
    // same webhook-id.
    let dead = eventually("the /dead batches dead-lettered", PATIENCE, async || {
        let dead = deliveries(&server, &ttd, ids["/dead"], Some("dead")).await;
        let count: i64 = dead.iter().filter_map(|d| d["eventCount"].as_i64()).sum();
        if count == 10 {
            Ok(dead)
        } else {
            Err(serde_json::to_string(&dead).unwrap_or_default())
        }
    })
    .await;
    let before: BTreeMap<String, Value> = receiver
        .deliveries_on("/dead")
        .into_iter()
        .map(|h| (h.webhook_id().unwrap_or("").to_owned(), h.event.clone()))
        .collect();
    assert_eq!(before.len(), dead.len(), "one webhook-id a batch");
    heal.store(true, Ordering::SeqCst);
    let answer = redrive(&server, &ttd, ids["/dead"]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["requeued"], dead.len(), "{}", answer.text);
    let redriven = eventually("the redriven batches accepted", PATIENCE, async || {
        let accepted: Vec<Hit> = receiver
            .deliveries_on("/dead")
            .into_iter()
            .filter(|h| h.status == 200)
            .collect();
        if accepted.len() == before.len() {
            Ok(accepted)
        } else {
            Err(format!("{} of {} accepted", accepted.len(), before.len()))
        }
    })
    .await;
    for hit in &redriven {
        let id = hit.webhook_id().unwrap_or("");
        assert_eq!(
            before.get(id),
            Some(&hit.event),
            "the redriven batch {id} is the same events"
        );
    }

    // /wait: events published one by one within maxWaitMs go out as one batch.
    for i in 0..3 {
        publish_ok(&server, &ttd, &generic_event(&format!("w{i}"))).await;
    }
    let waited = eventually("the waiting batch", PATIENCE, async || {
        let hits: Vec<Hit> = receiver
            .deliveries_on("/wait")
            .into_iter()
            .filter(|h| batch_ids(h).iter().any(|id| id.starts_with('w')))
            .collect();
        match hits.as_slice() {
            [one] => Ok(batch_ids(one)),
            _ => Err(format!("{} batches", hits.len())),
        }
    })
    .await;
    assert_eq!(waited, ["w0", "w1", "w2"]);
}
