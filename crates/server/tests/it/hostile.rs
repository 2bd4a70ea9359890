//! Hostile input through HTTP: every query parameter and filter of the query routes with quotes,
//! `%`, `_`, `\`, NUL, 10 KB strings and non-UTF-8 percent-encodings (400 problem details or a
//! correct literal match, never a server error), and the limits on headers, URLs and slow clients.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::{RESOURCE, Server, client, get, get_request, page_ids, publish_ok, send};
use serde_json::json;

/// Raw query values, already percent-encoded as they go on the wire.
fn hostile_values() -> Vec<(String, &'static str)> {
    let long = "a".repeat(10 * 1024);
    let long_pct = "%25".repeat(3 * 1024);
    vec![
        ("%27".into(), "single quote"),
        ("%22".into(), "double quote"),
        (
            "%27%3B%20DROP%20TABLE%20events%3B%20--".into(),
            "SQL injection",
        ),
        ("%25".into(), "percent"),
        ("%".into(), "bare percent"),
        ("%25%25%25".into(), "percents"),
        ("_".into(), "underscore"),
        ("%5C".into(), "backslash"),
        ("%5C%25%5C_".into(), "escaped wildcards"),
        ("a%00b".into(), "NUL"),
        ("%00".into(), "only NUL"),
        ("%FF".into(), "non-UTF-8 byte"),
        ("%C3%28".into(), "invalid UTF-8 sequence"),
        ("%E2%82".into(), "truncated UTF-8"),
        (long, "10 KB"),
        (long_pct, "3 K percents"),
        ("2023-02-16T18%3A0%E2%82%AC".into(), "multi-byte at byte 16"),
        ("-1".into(), "negative"),
        ("99999999999999999999999".into(), "huge number"),
        ("%F0%9F%98%80".into(), "emoji"),
    ]
}

async fn status_and_type(url: &str, token: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let answer = send(get_request(url, token, headers)).await;
    (answer.status, answer.content_type().to_owned())
}

/// Every parameter of both query routes × every hostile value: 200 or 400 with problem details.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_query_values_get_400_or_an_answer_never_a_server_error() {
    let server = Server::start();
    let ttd = server.ttd();
    let person = server.person();
    let routes: [(&str, &str, &str, &[&str]); 2] = [
        (
            "/events/api/v1/events",
            "resource=urn:altinn:resource:super-simple-service&after=0",
            ttd.as_str(),
            &[
                "resource",
                "after",
                "afterSource",
                "subject",
                "source",
                "type",
                "from",
                "to",
                "size",
            ],
        ),
        (
            "/events/api/v1/app/party",
            "party=50002598&after=0",
            person.as_str(),
            &[
                "party", "unit", "after", "source", "type", "from", "to", "size",
            ],
        ),
    ];
    let mut tried = 0;
    let mut bad_requests = 0;
    let mut failures = Vec::new();
    for (path, base, token, params) in routes {
        for param in params {
            for (value, label) in hostile_values() {
                // Replace the parameter if the base has it, else add it.
                let kept: Vec<&str> = base
                    .split('&')
                    .filter(|kv| !kv.starts_with(&format!("{param}=")))
                    .collect();
                let url = server.at(&format!("{path}?{}&{param}={value}", kept.join("&")));
                let (status, content_type) = status_and_type(&url, token, &[]).await;
                tried += 1;
                match status {
                    200 => {}
                    400 if content_type.starts_with("application/problem+json") => {
                        bad_requests += 1
                    }
                    _ => failures.push(format!("{path} {param}={label}: {status} {content_type}")),
                }
            }
        }
    }
    // The headers that carry filters, too.
    for (path, base, token, header) in [
        (
            "/events/api/v1/events",
            "resource=urn:altinn:resource:super-simple-service&after=0",
            ttd.as_str(),
            "altinn-alternativesubject",
        ),
        (
            "/events/api/v1/app/party",
            "after=0",
            person.as_str(),
            "person",
        ),
    ] {
        for value in ["'", "%", "_", "\\", "%00", "%FF", &"x".repeat(10 * 1024)] {
            let (status, content_type) = status_and_type(
                &server.at(&format!("{path}?{base}")),
                token,
                &[(header, value)],
            )
            .await;
            tried += 1;
            if !(status == 200
                || status == 400 && content_type.starts_with("application/problem+json"))
            {
                failures.push(format!("{path} {header}: {value:.20}: {status}"));
            }
        }
    }
    eprintln!("hostile query values: {tried} requests, {bad_requests} answered 400, 0 errors");
    assert!(
        failures.is_empty(),
        "{} server errors or non-problem 400s: {:#?}; log: {}",
        failures.len(),
        failures,
        server.log()
    );
    assert!(
        bad_requests > 0,
        "nothing was refused: the test did not reach the parsers"
    );
}

/// Filters with `_`, `\`, quotes and `%` match literally (only `%` is a wildcard).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_metacharacters_match_literally() {
    let server = Server::start();
    let ttd = server.ttd();
    let events = [
        ("lit-1", "https://example.com/a_b", "t.a_b"),
        ("lit-2", "https://example.com/axb", "t.axb"),
        ("lit-3", "https://example.com/pct%25", "t.q'\"\\"),
        ("lit-4", "https://example.com/other", "t.back\\slash%"),
    ];
    for (id, source, kind) in events {
        let mut e = json!({
            "specversion": "1.0", "id": id, "source": source, "type": kind,
            "resource": RESOURCE,
            "subject": "urn:altinn:organization:identifier-no:991825827"
        });
        e["data"] = json!(null);
        publish_ok(&server, &ttd, &e).await;
    }
    let cases: [(&str, &[&str]); 9] = [
        ("type=t.a_b", &["lit-1"]),
        ("type=%25_b", &["lit-1"]),
        ("type=t.a%25", &["lit-1", "lit-2"]),
        ("type=t.q%27%22%5C", &["lit-3"]),
        ("type=%25%5C%25", &["lit-3", "lit-4"]),
        ("type=t.back%5Cslash%25", &["lit-4"]),
        ("source=https%3A%2F%2Fexample.com%2Fa_b", &["lit-1"]),
        ("source=https%3A%2F%2Fexample.com%2Fpct%2525", &["lit-3"]),
        ("type=t.a%00b", &[]),
    ];
    for (filter, expected) in cases {
        let (status, _, body) = get(&server.log_url(&format!("&{filter}")), &ttd).await;
        assert_eq!(status, 200, "{filter}: {body}");
        assert_eq!(page_ids(&body), expected, "{filter}");
    }
}

/// Too many headers, a huge header, a 100 KB URL: a 4xx (or a correct answer), never a 5xx and
/// never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_and_url_limits_answer_with_client_errors() {
    let server = Server::start();
    let ttd = server.ttd();
    let base = format!("/events/api/v1/events?resource={RESOURCE}&after=0");

    let many: Vec<(String, String)> = (0..200).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let refs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (status, _) = status_and_type(&server.at(&base), &ttd, &refs).await;
    eprintln!("200 headers: {status}");
    assert!((400..500).contains(&status), "200 headers: {status}");

    let huge = "v".repeat(1024 * 1024);
    let sent = client()
        .get(server.at(&base))
        .bearer_auth(&ttd)
        .header("x-huge", &huge)
        .send()
        .await;
    match sent {
        Ok(r) => {
            eprintln!("1 MiB header: {}", r.status());
            assert!(r.status().is_client_error(), "1 MiB header: {}", r.status());
        }
        // hyper may close the connection on an oversized head; no answer is not a 5xx either.
        Err(e) => eprintln!("1 MiB header: connection closed ({e})"),
    }

    // reqwest will not build a URL this long, so the request goes out by hand.
    let address = server.url.trim_start_matches("http://").to_owned();
    let head = format!(
        "GET {base}&type={} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ttd}\r\nConnection: close\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let status = tokio::task::spawn_blocking(move || raw_status(&address, head.as_bytes()))
        .await
        .expect("join");
    eprintln!("100 KB URL: {status:?}");
    assert!(
        status.is_none_or(|s| s == 200 || (400..500).contains(&s)),
        "100 KB URL: {status:?}"
    );

    // The server still answers normally afterwards.
    let (status, _, _) = get(&server.at(&base), &ttd).await;
    assert_eq!(status, 200);
}

/// Sends `request` on a new connection and returns the status of the answer (None if the server
/// closed the connection without one).
fn raw_status(address: &str, request: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(address).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    if s.write_all(request).is_err() {
        return None;
    }
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
}

/// Reads until the server closes the connection or `bound` passes; true if it closed.
fn closed_within(stream: &mut TcpStream, bound: Duration) -> bool {
    stream.set_read_timeout(Some(bound)).expect("read timeout");
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // An answer (e.g. 408) followed by the close is fine; keep reading.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

/// A client that sends part of its headers and stalls, and one that trickles a request byte by
/// byte, are cut off; a live stream on another connection is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_trickling_clients_are_cut_off() {
    let server = Server::start();
    let address = server.url.trim_start_matches("http://").to_owned();
    let bound = Duration::from_secs(40);

    let stalled = {
        let address = address.clone();
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(&address).expect("connect");
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Partial: ")
                .expect("write");
            closed_within(&mut s, bound)
        })
    };
    let trickled = {
        let address = address.clone();
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(&address).expect("connect");
            let request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: "
                .iter()
                .copied();
            // Bounded: 400 bytes at 100 ms is 40 s, and the header never ends.
            for byte in request.chain(std::iter::repeat_n(b'a', 400 - 38)) {
                if s.write_all(&[byte]).is_err() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            closed_within(&mut s, Duration::from_millis(1))
        })
    };
    let stalled = tokio::task::spawn_blocking(move || stalled.join().expect("thread"))
        .await
        .expect("join");
    let trickled = tokio::task::spawn_blocking(move || trickled.join().expect("thread"))
        .await
        .expect("join");
    eprintln!("stalled headers cut off: {stalled}; trickled request cut off: {trickled}");
    assert!(
        stalled,
        "a client that stalled in its headers was kept open"
    );
    assert!(trickled, "a client trickling its headers was kept open");
}

/// Whether a streaming response is still open: drains what is buffered, then true when a read
/// waits (rather than meeting the end or an error).
async fn still_open(response: &mut reqwest::Response, seen: &mut String) -> bool {
    for _ in 0..1000 {
        match tokio::time::timeout(Duration::from_millis(500), response.chunk()).await {
            Ok(Ok(Some(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(Ok(None)) | Ok(Err(_)) => return false,
            Err(_) => return true,
        }
    }
    true
}

/// The header timeout does not touch the live streams: both stay open past it and the generic one
/// still delivers an event published afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_streams_outlive_the_header_timeout() {
    let server = Server::start();
    let ttd = server.ttd();
    let person = server.person();
    let open = |url: String, token: String| async move {
        let response = client()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .expect("stream");
        assert_eq!(response.status(), 200);
        response
    };
    let mut generic = open(
        server.at(&format!("/events/api/v1/events/stream?resource={RESOURCE}")),
        ttd.clone(),
    )
    .await;
    let mut app = open(
        server.at("/events/api/v1/app/party/stream?party=50002598"),
        person,
    )
    .await;
    // Longer than the 10 s the server gives a request head.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let (mut seen, mut app_seen) = (String::new(), String::new());
    assert!(
        still_open(&mut generic, &mut seen).await,
        "the generic stream was cut off"
    );
    assert!(
        still_open(&mut app, &mut app_seen).await,
        "the app stream was cut off"
    );
    publish_ok(&server, &ttd, &common::generic_event("after-timeout")).await;
    for _ in 0..40 {
        if seen.contains("after-timeout") {
            break;
        }
        assert!(
            still_open(&mut generic, &mut seen).await,
            "the stream ended"
        );
    }
    assert!(
        seen.contains("after-timeout"),
        "the event never arrived: {seen}"
    );
}

/// A client that sends a complete head announcing a body and then stalls is answered or cut off
/// instead of holding the publish route for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_is_cut_off() {
    let server = Server::start();
    let ttd = server.ttd();
    let address = server.url.trim_start_matches("http://").to_owned();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(&address).expect("connect");
        let head = format!(
            "POST /events/api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ttd}\r\n\
             Content-Type: application/cloudevents+json\r\nContent-Length: 1000\r\n\r\n{{\"id\":"
        );
        s.write_all(head.as_bytes()).expect("write");
        s.set_read_timeout(Some(Duration::from_secs(40)))
            .expect("read timeout");
        let mut answer = Vec::new();
        match s.read_to_end(&mut answer) {
            Ok(_) => Some(String::from_utf8_lossy(&answer).into_owned()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => Some(format!("closed: {e}")),
        }
    })
    .await
    .expect("join");
    eprintln!("stalled body: {outcome:?}");
    let answer = outcome.expect("a client stalling in its body was kept open");
    assert!(
        !answer.starts_with("HTTP/1.1 2") && !answer.starts_with("HTTP/1.1 5"),
        "{answer}"
    );
    if answer.starts_with("HTTP/1.1 4") {
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("content-type: application/problem+json"),
            "{answer}"
        );
    }
}
