//! Spans of the server's own over OTLP/HTTP (`--otlp-endpoint`), collected by a real HTTP
//! receiver on loopback: a publish request's span is a child of the producer's `traceparent`, its
//! commit's and each webhook attempt's span children of the publish, the dispatcher's pages spans
//! of their own, and the receiver is sent the attempt's span as
//! its `traceparent`, so that one trace runs from producer to subscriber through Hendelse. No
//! token or webhook secret is exported. A collector that is down costs nothing else.

use serde_json::{Value, json};

use crate::common::{
    EVENTS, PATIENCE, RESOURCE, Receiver, STRUCTURED, Server, TO_LOOPBACK, client,
    create_subscription, eventually, free_port, generic_event, id_of, secret_of,
    subscribe_validated, wait_validated,
};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PRODUCER_SPAN: &str = "00f067aa0ba902b7";
/// OTLP span kinds.
const SERVER: u64 = 2;
const CLIENT: u64 = 3;

async fn publish(server: &Server, token: &str, event: &Value, traceparent: &str) {
    let response = client()
        .post(server.at(EVENTS))
        .bearer_auth(token)
        .header("content-type", STRUCTURED)
        .header("traceparent", traceparent)
        .body(event.to_string())
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
}

/// Every span the collector was sent.
fn spans(collector: &Receiver) -> Vec<Value> {
    collector
        .hits_on("/v1/traces")
        .iter()
        .flat_map(|hit| {
            hit.event["resourceSpans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|r| r["scopeSpans"].as_array().cloned().unwrap_or_default())
        .flat_map(|s| s["spans"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

fn int_attribute(span: &Value, key: &str) -> Option<u64> {
    let value = attribute(span, key)?;
    value["intValue"]
        .as_u64()
        .or_else(|| value["intValue"].as_str()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_producer_through_the_publish_to_the_webhook() {
    let collector = Receiver::start().await;
    let mut server = Server::start_with(
        &[
            &TO_LOOPBACK[..],
            &[
                "--otlp-endpoint",
                &collector.url(""),
                "--otlp-protocol",
                "http/json",
            ],
        ]
        .concat(),
    );
    let receiver = Receiver::start().await;
    let ttd = server.ttd();
    let secret = secret_of(32);
    let id = subscribe_validated(
        &server,
        &ttd,
        &json!({"endPoint": receiver.url("/traced"), "resourceFilter": RESOURCE, "secret": secret}),
    )
    .await;
    publish(
        &server,
        &ttd,
        &generic_event("otel-1"),
        &format!("00-{TRACE}-{PRODUCER_SPAN}-01"),
    )
    .await;
    let hit = receiver.delivered("/traced", "otel-1").await;
    let sent = hit.header("traceparent").expect("a traceparent").to_owned();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts.len(), 4, "{sent}");
    assert_eq!(parts[1], TRACE, "the producer's trace goes on: {sent}");
    assert_ne!(parts[2], PRODUCER_SPAN, "the attempt's own span: {sent}");
    let attempt_span = parts[2].to_owned();

    // A graceful stop sends what the batch exporter still holds.
    assert!(server.terminate().success(), "{}", server.log());
    let found = eventually("the spans at the collector", PATIENCE, async || {
        let all = spans(&collector);
        let publish = all.iter().find(|s| {
            s["traceId"] == TRACE
                && s["parentSpanId"] == PRODUCER_SPAN
                && s["name"] == "POST /events/api/v1/events"
        });
        let attempt = all.iter().find(|s| s["spanId"] == attempt_span.as_str());
        match (publish, attempt) {
            (Some(p), Some(a)) => Ok((p.clone(), a.clone())),
            _ => Err(format!("{all:?}")),
        }
    })
    .await;
    let (publish_span, attempt) = found;
    assert_eq!(
        publish_span["kind"].as_u64(),
        Some(SERVER),
        "{publish_span}"
    );
    assert_eq!(
        int_attribute(&publish_span, "http.response.status_code"),
        Some(200),
        "{publish_span}"
    );
    assert_eq!(attempt["traceId"], TRACE, "{attempt}");
    assert_eq!(
        attempt["parentSpanId"], publish_span["spanId"],
        "the attempt hangs under the publish: {attempt}"
    );
    assert_eq!(attempt["name"], "POST webhook");
    assert_eq!(attempt["kind"].as_u64(), Some(CLIENT), "{attempt}");
    assert_eq!(
        int_attribute(&attempt, "http.response.status_code"),
        Some(200)
    );
    assert_eq!(
        int_attribute(&attempt, "hendelse.subscription.id"),
        Some(id as u64)
    );
    let all = spans(&collector);
    assert!(
        all.iter().any(|s| s["name"] == "commit events"
            && s["parentSpanId"] == publish_span["spanId"]
            && int_attribute(s, "hendelse.events") == Some(1)),
        "the publish's commit: {all:?}"
    );
    assert!(
        all.iter().any(|s| s["name"] == "dispatch events"
            && int_attribute(s, "hendelse.deliveries").is_some_and(|n| n >= 1)),
        "the page that queued the delivery: {all:?}"
    );
    let exported: String = collector
        .hits_on("/v1/traces")
        .iter()
        .map(|h| String::from_utf8_lossy(&h.body).into_owned())
        .collect();
    assert!(
        exported.contains("\"hendelse\""),
        "service.name: {exported}"
    );
    for hidden in [ttd.as_str(), secret.trim_start_matches("whsec_"), "/traced"] {
        assert!(!exported.contains(hidden), "{hidden} was exported");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_nothing_else() {
    let down = format!("http://127.0.0.1:{}", free_port());
    let mut server = Server::start_with(&[&TO_LOOPBACK[..], &["--otlp-endpoint", &down]].concat());
    let receiver = Receiver::start().await;
    let ttd = server.ttd();
    let created = create_subscription(
        &server,
        &ttd,
        &json!({"endPoint": receiver.url("/untraced"), "resourceFilter": RESOURCE}),
    )
    .await;
    let id = id_of(&created.body);
    wait_validated(&server, &ttd, id).await;
    publish(
        &server,
        &ttd,
        &generic_event("otel-down"),
        &format!("00-{TRACE}-{PRODUCER_SPAN}-01"),
    )
    .await;
    let hit = receiver.delivered("/untraced", "otel-down").await;
    assert!(
        hit.header("traceparent").is_some_and(|t| t.contains(TRACE)),
        "{:?}",
        hit.header("traceparent")
    );
    assert!(server.terminate().success(), "{}", server.log());
}

#[test]
fn an_otlp_endpoint_that_is_no_url_is_refused_at_start() {
    let out = std::process::Command::new(crate::common::BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--otlp-endpoint",
            "collector:4318",
        ])
        .output()
        .expect("run hendelse");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--otlp-endpoint"), "{stderr}");
}
