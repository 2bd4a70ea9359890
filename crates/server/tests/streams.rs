//! Ten thousand live streams on one node (issue 17, case 4): every client gets every event it may
//! read, exactly once; the server's memory stays bounded; clients that stop reading are
//! disconnected. A test binary of its own, so that its load and its file descriptors never share
//! the machine with the other binaries' tests.
//!
//! `HENDELSE_STREAMS` sets the number of filtered streams (10,000), `HENDELSE_STREAM_EVENTS` the
//! events published at 1,000/s (10,000). The figures it prints are in RELIABILITY.md.

#[allow(unused_imports)]
#[path = "it/common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{RESOURCE, Server, event_about, generic_event, post_event};
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// Distinct subjects the filtered streams and the events are spread over.
const SUBJECTS: usize = 1_000;
/// Streams of the whole resource, which get every event.
const WHOLE: usize = 10;
/// Streams whose clients stop reading after the response head.
const STALLED: usize = 20;
const RATE: u64 = 1_000;
const PUBLISHERS: u64 = 8;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Room for this process's clients and, inherited, for the server's sockets.
fn raise_file_limit(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur >= needed {
            return;
        }
        limit.rlim_cur = needed.max(limit.rlim_cur);
        limit.rlim_max = limit.rlim_max.max(needed);
        assert_eq!(
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit),
            0,
            "cannot raise the file-descriptor limit to {needed}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Resident and peak resident memory of a process, in KiB.
fn memory_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time of a process so far, in clock ticks.
fn cpu_of(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after_name = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

async fn metric(server: &Server, name: &str) -> f64 {
    let text = reqwest::get(server.at("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Opens a stream over a plain socket and reads its head; `receive_buffer` shrinks the socket's
/// buffer (a client that will stop reading fills it sooner).
async fn open(server: &Server, token: &str, query: &str, receive_buffer: Option<u32>) -> TcpStream {
    let address: std::net::SocketAddr = server
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("the server's address");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    if let Some(size) = receive_buffer {
        socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
    }
    let mut stream = socket.connect(address).await.expect("connect");
    let request = format!(
        "GET /events/api/v1/events/stream?{query} HTTP/1.1\r\nHost: {address}\r\n\
         Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    // The head, byte by byte up to its end, so that nothing of the body is consumed here.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.expect("the head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    stream
}

/// Reads event ids off a stream until `expected` have come (or the connection ends).
async fn collect(
    stream: TcpStream,
    expected: usize,
    ids: Arc<Mutex<Vec<String>>>,
    done: Arc<AtomicUsize>,
) {
    let mut lines = BufReader::new(stream).lines();
    let mut count = 0;
    while count < expected {
        let Ok(Some(line)) = lines.next_line().await else {
            break;
        };
        // Chunked framing lines and `data:` lines carry no id.
        if let Some(id) = line.strip_prefix("id:") {
            ids.lock().await.push(id.trim().to_owned());
            count += 1;
        }
    }
    done.fetch_add(1, Ordering::SeqCst);
    // Stay connected until the test ends: a client that leaves early is not what is measured.
    let mut rest = lines.into_inner();
    let mut sink = [0u8; 4096];
    while matches!(rest.read(&mut sink).await, Ok(n) if n > 0) {}
}

/// Publishes `events` at `RATE` per second from `PUBLISHERS` connections; the latency of each.
async fn publish_paced(
    server: &Server,
    token: &str,
    events: Vec<serde_json::Value>,
) -> Vec<Duration> {
    let events = Arc::new(events);
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let (events, url, token) = (events.clone(), server.url.clone(), token.to_owned());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let interval = Duration::from_micros(1_000_000 * PUBLISHERS / RATE);
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut latencies = Vec::new();
            for event in events.iter().skip(p as usize).step_by(PUBLISHERS as usize) {
                tick.tick().await;
                let started = Instant::now();
                let answer = post_event(&http, &url, &token, event)
                    .await
                    .expect("publish");
                assert_eq!(
                    answer.status(),
                    200,
                    "{}",
                    answer.text().await.unwrap_or_default()
                );
                latencies.push(started.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("a publisher"));
    }
    all.sort();
    all
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn event(n: usize) -> serde_json::Value {
    let mut event = event_about(&format!("s{n}"), &format!("/party/{}", n % SUBJECTS));
    // About 1.2 KB, so that a client that stops reading fills its socket's buffers soon.
    event["data"] = serde_json::json!({ "n": n, "pad": "x".repeat(1_000) });
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_streams_each_get_every_event_they_may_read() {
    let streams = setting("HENDELSE_STREAMS", 10_000);
    let events = setting("HENDELSE_STREAM_EVENTS", 10_000);
    let total_streams = streams + WHOLE + STALLED;
    raise_file_limit(total_streams as u64 + 1_024);
    let server = Server::start_with(&["--send-timeout", "5s"]);
    let pid = server.pid().expect("the server's pid");
    let token = server.ttd();

    // Without streams: the publish latency to compare with.
    let warm: Vec<serde_json::Value> = (0..2_000).map(|n| event(events + n)).collect();
    let alone = publish_paced(&server, &token, warm).await;
    let (rss_before, _) = memory_of(pid);

    // Open every stream, 256 at a time; each starts at the end of the log.
    let started = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let opened: Vec<(usize, TcpStream)> = futures_util::stream::iter(0..streams + WHOLE)
        .map(|i| {
            let query = if i < streams {
                format!("resource={RESOURCE}&subject=/party/{}", i % SUBJECTS)
            } else {
                format!("resource={RESOURCE}")
            };
            let (server, token) = (&server, &token);
            async move { (i, open(server, token, &query, None).await) }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    let mut readers = Vec::new();
    let mut received = Vec::new();
    for (i, stream) in opened {
        let expected = if i < streams {
            (0..events).filter(|n| n % SUBJECTS == i % SUBJECTS).count()
        } else {
            events
        };
        let ids = Arc::new(Mutex::new(Vec::new()));
        received.push((i, expected, ids.clone()));
        readers.push(tokio::spawn(collect(stream, expected, ids, done.clone())));
    }
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        stalled.push(
            open(
                &server,
                &token,
                &format!("resource={RESOURCE}"),
                Some(4_096),
            )
            .await,
        );
    }
    let opened_in = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_open, _) = memory_of(pid);
    assert_eq!(
        metric(&server, "hendelse_stream_clients").await as usize,
        total_streams,
        "streams open on the server"
    );

    // 1,000 events a second, each to the ten streams of its subject and the whole-resource ones.
    let cpu_before = cpu_of(pid);
    let publishing = Instant::now();
    let batch: Vec<serde_json::Value> = (0..events).map(event).collect();
    let with_streams = publish_paced(&server, &token, batch).await;
    let published_in = publishing.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    while done.load(Ordering::SeqCst) < streams + WHOLE && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let delivered_in = publishing.elapsed();
    let cpu_ticks = cpu_of(pid) - cpu_before;
    let (rss_after, rss_peak) = memory_of(pid);

    // Every client: exactly the events of its subject (or all), once each.
    let mut deliveries = 0;
    for (i, expected, ids) in &received {
        let ids = ids.lock().await;
        let wanted: Vec<String> = (0..events)
            .filter(|n| *i >= streams || n % SUBJECTS == i % SUBJECTS)
            .map(|n| format!("s{n}"))
            .collect();
        assert_eq!(
            ids.len(),
            *expected,
            "stream {i} got {} of {expected}",
            ids.len()
        );
        let mut got = ids.clone();
        let distinct: HashSet<&String> = got.iter().collect();
        assert_eq!(distinct.len(), got.len(), "stream {i} got an event twice");
        got.sort();
        let mut wanted_sorted = wanted.clone();
        wanted_sorted.sort();
        assert_eq!(got, wanted_sorted, "stream {i}");
        deliveries += ids.len();
    }

    // The stalled clients were cut off once their buffers were full, and only they. A socket
    // takes up to 4 MiB before a write waits (tcp_wmem), so 16 MiB more go to every stream of the
    // whole resource (the reading ones drain them).
    let flood: Vec<serde_json::Value> = (0..64)
        .map(|n| {
            let mut big = generic_event(&format!("flood{n}"));
            big["data"] = serde_json::json!({ "pad": "y".repeat(256 * 1024) });
            big
        })
        .collect();
    for big in &flood {
        let answer = post_event(&reqwest::Client::new(), &server.url, &token, big)
            .await
            .expect("publish");
        assert_eq!(answer.status(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&server, "hendelse_connections_send_timed_out_total").await < STALLED as f64
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let timed_out = metric(&server, "hendelse_connections_send_timed_out_total").await as usize;
    assert_eq!(timed_out, STALLED, "connections closed for not reading");
    assert_eq!(
        metric(&server, "hendelse_stream_clients").await as usize,
        streams + WHOLE,
        "the reading streams stay open"
    );
    for mut socket in stalled {
        // What the kernel still holds, then the end the server made.
        let mut sink = vec![0u8; 65_536];
        let ended = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match socket.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "a stalled client's connection is still open");
    }

    let ticks_per_second = 100.0; // USER_HZ on Linux
    let cpu_seconds = cpu_ticks as f64 / ticks_per_second;
    eprintln!(
        "{total_streams} streams ({streams} of one subject among {SUBJECTS}, {WHOLE} of the whole \
         resource, {STALLED} stalled) opened in {opened_in:.1?}; {events} events published at \
         {RATE}/s in {published_in:.1?}, {deliveries} deliveries, all delivered after \
         {delivered_in:.1?}\n\
         server RSS: {} MiB before the streams, {} MiB with them open ({:.1} KiB a stream), {} MiB \
         after publishing, peak {} MiB\n\
         server CPU while publishing and delivering: {cpu_seconds:.1} s over {delivered_in:.1?} \
         ({:.0} µs a delivery)\n\
         publish latency without streams p50 {:.2?} p99 {:.2?}; with them p50 {:.2?} p99 {:.2?}\n\
         stalled clients disconnected: {timed_out}",
        rss_before / 1024,
        rss_open / 1024,
        (rss_open.saturating_sub(rss_before)) as f64 / total_streams as f64,
        rss_after / 1024,
        rss_peak / 1024,
        cpu_seconds * 1e6 / deliveries as f64,
        percentile(&alone, 0.5),
        percentile(&alone, 0.99),
        percentile(&with_streams, 0.5),
        percentile(&with_streams, 0.99),
    );
    assert!(
        rss_peak < 1024 * 1024,
        "the server's peak RSS was {} MiB",
        rss_peak / 1024
    );
    for reader in readers {
        reader.abort();
    }
}
