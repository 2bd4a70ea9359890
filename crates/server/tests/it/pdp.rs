//! Access decided by an external PDP (`--pdp-url`): a real HTTP server in the test speaks the
//! XACML 3.0 JSON profile, applies a small policy to the requests it receives and records them.
//! Queries, subscription creation and push are filtered by it, one multi-decision request per
//! page; its decisions are cached per subject (a person's permit is not another's), a permit
//! counts only when the token meets the minimum-authentication-level obligation; while it is
//! down or slow the API answers 503 with Retry-After and deliveries wait, then go out, and
//! nothing is queued or delivered that it did not permit.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::common::{
    ORG_SUBJECT, PATIENCE, PERSON, PERSON_PARTY, Receiver, SUBSCRIBE, Server, TO_LOOPBACK, client,
    create_subscription, deliveries, event_about, eventually, get, id_of, page_ids,
    publish_batch_ok, publish_ok, subscribe_validated, wait_validated,
};

const USER: &str = "20001234";
const OTHER_ORG: &str = "urn:altinn:organization:identifier-no:912345678";
const RESOURCE_ID: &str = "super-simple-service";

/// How the PDP of the test behaves.
const UP: u8 = 0;
/// Answers 503 to read decisions (publish and subscribe are still answered).
const DOWN_FOR_READS: u8 = 1;
/// Answers after 3 s, beyond the node's 1 s timeout.
const SLOW: u8 = 2;
/// Denies the person everything.
const DENIES_THE_PERSON: u8 = 3;
/// Answers one read decision request, then 503 to the next ones (the dispatcher's question is
/// answered, the worker's at send time is not).
const ANSWERS_ONE_READ: u8 = 4;

#[derive(Clone)]
struct Pdp {
    url: String,
    mode: Arc<AtomicU8>,
    requests: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
}

fn attributes(category: &Value) -> Vec<(String, String)> {
    category["Attribute"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            (
                a["AttributeId"].as_str().unwrap_or_default().to_owned(),
                a["Value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn has(attributes: &[(String, String)], id: &str, value: &str) -> bool {
    attributes.iter().any(|(i, v)| i == id && v == value)
}

/// The policy: ttd may do anything; user 20001234 may read and subscribe to the events of
/// super-simple-service about organisation 991825827, with authentication level 2 or more.
async fn decide(State(pdp): State<Pdp>, headers: HeaderMap, body: String) -> Response {
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    pdp.requests
        .lock()
        .expect("requests")
        .push((headers, request.clone()));
    let mode = pdp.mode.load(Ordering::SeqCst);
    let request = &request["Request"];
    let action = attributes(&request["Action"][0])
        .into_iter()
        .find(|(id, _)| id == "urn:oasis:names:tc:xacml:1.0:action:action-id")
        .map(|(_, v)| v)
        .unwrap_or_default();
    if mode == SLOW {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if mode == DOWN_FOR_READS && action == "read" {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if mode == ANSWERS_ONE_READ && action == "read" {
        // The next read request finds the PDP down.
        pdp.mode.store(DOWN_FOR_READS, Ordering::SeqCst);
    }
    let subject = attributes(&request["AccessSubject"][0]);
    let results: Vec<Value> = request["Resource"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|resource| {
            let attrs = attributes(resource);
            let org = has(&subject, "urn:altinn:org", "ttd");
            let person = has(&subject, "urn:altinn:userid", USER)
                && mode != DENIES_THE_PERSON
                && (action == "read" || action == "subscribe")
                && has(&attrs, "urn:altinn:resource", RESOURCE_ID)
                && has(&attrs, "urn:altinn:organization:identifier-no", "991825827");
            let echoed: Vec<Value> = resource["Attribute"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["IncludeInResult"] == true)
                .cloned()
                .collect();
            let mut result = json!({
                "Decision": if org || person { "Permit" } else { "Deny" },
                "Category": [{"CategoryId": "urn:oasis:names:tc:xacml:3.0:attribute-category:resource", "Attribute": echoed}]
            });
            if person && !org {
                result["Obligations"] = json!([{
                    "Id": "urn:altinn:obligation:authenticationLevel1",
                    "AttributeAssignment": [{
                        "AttributeId": "urn:altinn:obligation-assignment:1",
                        "Value": "2",
                        "Category": "urn:altinn:minimum-authenticationlevel",
                        "DataType": "http://www.w3.org/2001/XMLSchema#integer"
                    }]
                }]);
            }
            result
        })
        .collect();
    axum::Json(json!({ "Response": results })).into_response()
}

impl Pdp {
    async fn start() -> Pdp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let pdp = Pdp {
            url: format!(
                "http://{}/authorization/api/v1/decision",
                listener.local_addr().expect("address")
            ),
            mode: Arc::new(AtomicU8::new(UP)),
            requests: Arc::new(Mutex::new(Vec::new())),
        };
        let app = Router::new()
            .route("/authorization/api/v1/decision", post(decide))
            .with_state(pdp.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        pdp
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn requests(&self) -> Vec<(HeaderMap, Value)> {
        self.requests.lock().expect("requests").clone()
    }

    /// The requests for this action so far.
    fn asked(&self, action: &str) -> Vec<Value> {
        self.requests()
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| r["Request"]["Action"][0]["Attribute"][0]["Value"] == action)
            .collect()
    }
}

fn person_with_level(server: &Server, level: &str) -> String {
    server.token(&[
        "--pid",
        PERSON,
        "--party-id",
        &PERSON_PARTY.to_string(),
        "--user-id",
        USER,
        "--auth-level",
        level,
        "--scope",
        SUBSCRIBE,
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_pdp_decides_queries_subscriptions_and_deliveries() {
    let pdp = Pdp::start().await;
    let server = Server::start_with(
        &[
            &TO_LOOPBACK[..],
            &[
                "--pdp-url",
                &pdp.url,
                "--pdp-header",
                "Ocp-Apim-Subscription-Key: k3y",
                "--pdp-timeout",
                "1s",
                "--pdp-cache",
                "3s",
                "--retry-schedule",
                "200ms,200ms,200ms",
            ],
        ]
        .concat(),
    );
    let ttd = server.ttd();
    let person = person_with_level(&server, "3");

    // A publish asks once for its whole batch.
    publish_batch_ok(
        &server,
        &ttd,
        &[
            event_about("p-1", ORG_SUBJECT),
            event_about("p-2", OTHER_ORG),
            event_about("p-3", ORG_SUBJECT),
        ],
    )
    .await;
    assert_eq!(pdp.asked("publish").len(), 1);
    let (headers, _) = pdp.requests().remove(0);
    assert_eq!(headers["ocp-apim-subscription-key"], "k3y");

    // A page is one multi-decision request, events with the same attributes one resource of it.
    let query = server.log_url("&size=100");
    let (status, _, page) = get(&query, &person).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page_ids(&page), ["p-1", "p-3"], "{page}");
    let reads = pdp.asked("read");
    assert_eq!(reads.len(), 1);
    assert_eq!(
        reads[0]["Request"]["Resource"].as_array().map(Vec::len),
        Some(2)
    );
    // Cached: asked again, the PDP is not.
    let (_, _, again) = get(&query, &person).await;
    assert_eq!(page_ids(&again), ["p-1", "p-3"]);
    assert_eq!(pdp.asked("read").len(), 1, "decisions are cached");
    // The same user at level 1 does not meet the obligation (from the cache too).
    let (status, _, low) = get(&query, &person_with_level(&server, "1")).await;
    assert_eq!(status, 200, "{low}");
    assert!(page_ids(&low).is_empty(), "{low}");
    // Another subject is asked about in its own right, and denied.
    let (_, _, other) = get(&query, &server.other_person()).await;
    assert!(page_ids(&other).is_empty(), "{other}");
    assert_eq!(pdp.asked("read").len(), 2, "the cache keeps subjects apart");

    // Subscriptions are decided by it too.
    let receiver = Receiver::start().await;
    let created = create_subscription(
        &server,
        &person,
        &json!({"endPoint": receiver.url("/person"), "resourceFilter": crate::common::RESOURCE, "subjectFilter": ORG_SUBJECT}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = id_of(&created.body);
    let refused = create_subscription(
        &server,
        &person,
        &json!({"endPoint": receiver.url("/person"), "resourceFilter": crate::common::RESOURCE, "subjectFilter": OTHER_ORG}),
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    wait_validated(&server, &person, id).await;
    publish_ok(&server, &ttd, &event_about("pushed", ORG_SUBJECT)).await;
    receiver.delivered("/person", "pushed").await;

    // Down for reads, once the cached decisions have expired: queries get 503 with Retry-After,
    // the delivery waits (not dead-lettered, no attempt counted), then goes out.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    pdp.set(DOWN_FOR_READS);
    let down = crate::common::send(client().get(&query).bearer_auth(&person)).await;
    crate::common::assert_problem(&down, 503, "a query while the PDP is down");
    assert!(down.header("retry-after").is_some(), "{:?}", down.headers);
    publish_ok(&server, &ttd, &event_about("while-down", ORG_SUBJECT)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!receiver.ids_on("/person").contains("while-down"));
    let dead = deliveries(&server, &person, id, Some("dead")).await;
    assert!(
        !dead.iter().any(|d| d["eventId"] == "while-down"),
        "dead-lettered while undecided: {dead:?}"
    );
    pdp.set(UP);
    receiver.delivered("/person", "while-down").await;

    // Slow beyond the timeout: 503, not a permit.
    pdp.set(SLOW);
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let slow = crate::common::send(client().get(&query).bearer_auth(&person)).await;
    crate::common::assert_problem(&slow, 503, "a query while the PDP is slow");
    pdp.set(UP);

    // Denied: nothing is delivered that the PDP did not permit, nor even queued (the
    // subscriber's deliveries listing never names the event).
    tokio::time::sleep(Duration::from_millis(3200)).await;
    pdp.set(DENIES_THE_PERSON);
    let asked = pdp.asked("read").len();
    publish_ok(&server, &ttd, &event_about("denied", ORG_SUBJECT)).await;
    eventually(
        "the dispatcher to ask about the event",
        PATIENCE,
        async || {
            if pdp.asked("read").len() > asked {
                Ok(())
            } else {
                Err("not asked yet".to_owned())
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let listed = deliveries(&server, &person, id, None).await;
    assert!(
        !listed.iter().any(|d| d["eventId"] == "denied"),
        "a denied event is listed: {listed:?}"
    );
    assert!(!receiver.ids_on("/person").contains("denied"));
}

/// The PDP answers the dispatcher but not the worker at send time: the delivery waits, handed
/// back with no attempt counted (never dead-lettered for it), and goes out when it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_waits_while_its_send_time_decision_cannot_be_had() {
    let pdp = Pdp::start().await;
    let server = Server::start_with(
        &[
            &TO_LOOPBACK[..],
            &[
                "--pdp-url",
                &pdp.url,
                "--pdp-cache",
                "1ms",
                "--retry-schedule",
                "100ms",
            ],
        ]
        .concat(),
    );
    let ttd = server.ttd();
    let person = person_with_level(&server, "3");
    let receiver = Receiver::start().await;
    let id = subscribe_validated(
        &server,
        &person,
        &json!({"endPoint": receiver.url("/waiting"), "resourceFilter": crate::common::RESOURCE, "subjectFilter": ORG_SUBJECT}),
    )
    .await;

    pdp.set(ANSWERS_ONE_READ);
    publish_ok(&server, &ttd, &event_about("undecided", ORG_SUBJECT)).await;
    let waiting = eventually("the delivery to wait", PATIENCE, async || {
        let pending = deliveries(&server, &person, id, Some("pending")).await;
        match pending.iter().find(|d| d["eventId"] == "undecided") {
            Some(d) if pdp.asked("read").len() >= 2 => Ok(d.clone()),
            _ => Err(format!("{pending:?}")),
        }
    })
    .await;
    assert_eq!(waiting["attempts"], 0, "no attempt counted: {waiting}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!receiver.ids_on("/waiting").contains("undecided"));
    let dead = deliveries(&server, &person, id, Some("dead")).await;
    assert!(dead.is_empty(), "dead-lettered while undecided: {dead:?}");
    pdp.set(UP);
    receiver.delivered("/waiting", "undecided").await;
}
