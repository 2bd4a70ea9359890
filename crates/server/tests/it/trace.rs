//! Trace context from producer to subscriber: a publish request's W3C `traceparent` is kept with
//! each of its events and sent with their deliveries; an event's own `traceparent` attribute (the
//! CloudEvents distributed-tracing extension) is sent as the header too; an invalid header is
//! ignored. On SQLite and PostgreSQL.

use hendelse_store::testing::TestDatabase;
use serde_json::{Value, json};

use crate::common::{
    BATCH, EVENTS, Hit, Receiver, STRUCTURED, Server, TO_LOOPBACK, client, generic_event,
    subscribe_to, wait_validated,
};

const T1: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const T2: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const T3: &str = "00-11111111111111111111111111111111-2222222222222222-00";

async fn post(server: &Server, token: &str, body: &Value, content_type: &str, trace: Option<&str>) {
    let mut request = client()
        .post(server.at(EVENTS))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body.to_string());
    if let Some(trace) = trace {
        request = request.header("traceparent", trace);
    }
    let response = request.send().await.expect("publish");
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
}

async fn traces_reach_the_subscriber(extra: &[&str]) {
    let server = Server::start_with(&[&TO_LOOPBACK[..], extra].concat());
    let receiver = Receiver::start().await;
    let ttd = server.ttd();
    let id = subscribe_to(&server, &ttd, &receiver.url("/traced")).await;
    wait_validated(&server, &ttd, id).await;

    post(
        &server,
        &ttd,
        &generic_event("tr-header"),
        STRUCTURED,
        Some(T1),
    )
    .await;
    let mut attributed = generic_event("tr-attribute");
    attributed["traceparent"] = json!(T2);
    post(&server, &ttd, &attributed, STRUCTURED, None).await;
    post(
        &server,
        &ttd,
        &generic_event("tr-garbage"),
        STRUCTURED,
        Some("garbage"),
    )
    .await;
    let batch = json!([generic_event("tr-batch-1"), generic_event("tr-batch-2")]);
    post(&server, &ttd, &batch, BATCH, Some(T3)).await;

    let header = |hit: &Hit| hit.header("traceparent").map(str::to_owned);
    assert_eq!(
        header(&receiver.delivered("/traced", "tr-header").await).as_deref(),
        Some(T1)
    );
    let with_attribute = receiver.delivered("/traced", "tr-attribute").await;
    assert_eq!(header(&with_attribute).as_deref(), Some(T2));
    assert_eq!(with_attribute.event, attributed, "the event as published");
    assert_eq!(
        header(&receiver.delivered("/traced", "tr-garbage").await),
        None
    );
    for event in ["tr-batch-1", "tr-batch-2"] {
        assert_eq!(
            header(&receiver.delivered("/traced", event).await).as_deref(),
            Some(T3)
        );
    }
    // The stored events are unchanged: the header is kept beside them, not in them.
    let (status, _, page) = crate::common::get(&server.log_url("&size=100"), &ttd).await;
    assert_eq!(status, 200);
    let stored = page
        .as_array()
        .expect("page")
        .iter()
        .find(|e| e["id"] == "tr-header")
        .cloned()
        .expect("stored");
    assert_eq!(stored, generic_event("tr-header"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_publish_requests_traceparent_reaches_the_subscriber() {
    traces_reach_the_subscriber(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_publish_requests_traceparent_reaches_the_subscriber() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    traces_reach_the_subscriber(&["--database-url", &db.url]).await;
}
