//! The live stream (`text/event-stream`, resumable with `Last-Event-ID`) and `/metrics`, through
//! HTTP against the real binary.

use crate::common;

use std::time::Duration;

use crate::common::{RESOURCE, Server, Stream, client, generic_event, get_public, publish_ok};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_delivers_new_events_and_resumes_without_gaps() {
    let server = Server::start();
    let token = server.ttd();
    publish_ok(&server, &token, &generic_event("before")).await;
    let url = server.at(&format!("/events/api/v1/events/stream?resource={RESOURCE}"));

    // Without a starting point the stream begins at the end of the log.
    let mut live = Stream::open(&url, &token, None).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        let mut event = generic_event(&format!("live-{i}"));
        // Published text with line breaks still arrives as the same JSON.
        event["data"] = serde_json::json!({"n": i, "text": "two\nlines"});
        publish_ok(&server, &token, &event).await;
        sent.push(event);
    }
    for event in &sent {
        let message = live.next().await;
        assert_eq!(message.id.as_deref(), event["id"].as_str());
        let got: serde_json::Value = serde_json::from_str(&message.data).expect("JSON data");
        assert_eq!(&got, event);
    }
    drop(live);

    // Reconnecting after live-1 resumes with live-2: no gap, no repeat.
    let mut resumed = Stream::open(&url, &token, Some("live-1")).await;
    for i in 2..5 {
        assert_eq!(resumed.next().await.id, Some(format!("live-{i}")));
    }
    publish_ok(&server, &token, &generic_event("after-resume")).await;
    assert_eq!(resumed.next().await.id.as_deref(), Some("after-resume"));

    // `after=0` replays the whole log first.
    let mut replay = Stream::open(&format!("{url}&after=0"), &token, None).await;
    assert_eq!(replay.next().await.id.as_deref(), Some("before"));
    assert_eq!(replay.next().await.id.as_deref(), Some("live-0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_authorized_like_the_queries() {
    let server = Server::start();
    let token = server.ttd();
    let stranger = server.token(&["--org", "skd", "--scope", common::SUBSCRIBE]);
    let url = server.at(&format!(
        "/events/api/v1/events/stream?resource={RESOURCE}&after=0"
    ));
    let unauthorized = client().get(&url).send().await.expect("request");
    assert_eq!(unauthorized.status(), 401);
    let bad = client()
        .get(server.at("/events/api/v1/app/party/stream?party=1&unit=123456789"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    assert_eq!(bad.status(), 400, "the queries' parameter rules apply");

    publish_ok(&server, &token, &generic_event("secret-1")).await;
    let mut theirs = Stream::open(&url, &stranger, None).await;
    let mut ours = Stream::open(&url, &token, None).await;
    publish_ok(&server, &token, &generic_event("secret-2")).await;
    assert_eq!(ours.next().await.id.as_deref(), Some("secret-1"));
    assert_eq!(ours.next().await.id.as_deref(), Some("secret-2"));
    // The stranger's stream stays silent: within 2 s nothing but keep-alives arrive.
    let silent = tokio::time::timeout(Duration::from_secs(2), theirs.next()).await;
    assert!(
        silent.is_err(),
        "another org read {:?}",
        silent.map(|m| m.id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_public_and_count_the_traffic() {
    let server = Server::start();
    let token = server.ttd();
    for i in 0..3 {
        publish_ok(&server, &token, &generic_event(&format!("m{i}"))).await;
    }
    let query = server.log_url("");
    assert_eq!(
        client()
            .get(&query)
            .bearer_auth(&token)
            .send()
            .await
            .expect("query")
            .status(),
        200
    );
    let _stream = Stream::open(
        &server.at(&format!("/events/api/v1/events/stream?resource={RESOURCE}")),
        &token,
        None,
    )
    .await;

    let metrics = get_public(&server, "/metrics").await;
    assert_eq!(metrics.status, 200, "no token needed");
    let text = metrics.text;
    for needle in [
        r#"hendelse_events_published_total{endpoint="events"} 3"#,
        r#"hendelse_http_requests_total{route="/events/api/v1/events",method="POST",status="200"} 3"#,
        r#"hendelse_http_requests_total{route="/events/api/v1/events",method="GET",status="200"} 1"#,
        "hendelse_http_request_seconds_bucket",
        "hendelse_ingest_batch_events_bucket",
        "hendelse_ingest_commit_seconds_count",
        "hendelse_stream_clients 1",
        "hendelse_delivery_queue_depth 0",
        "hendelse_subscriptions 0",
        "hendelse_store_last_seq 3",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

/// SIGTERM ends open streams, so the server stops instead of waiting for them forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_open_streams() {
    let mut server = Server::start();
    let token = server.ttd();
    let url = server.at(&format!("/events/api/v1/events/stream?resource={RESOURCE}"));
    let mut stream = Stream::open(&url, &token, None).await;
    publish_ok(&server, &token, &generic_event("last")).await;
    assert_eq!(stream.next().await.id.as_deref(), Some("last"));
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .expect("terminate");
    assert!(status.success(), "{status:?}");
    let rest = tokio::time::timeout(Duration::from_secs(10), stream.response.chunk())
        .await
        .expect("the stream ends");
    assert!(
        matches!(rest, Ok(None) | Err(_)),
        "the stream went on: {rest:?}"
    );
}
