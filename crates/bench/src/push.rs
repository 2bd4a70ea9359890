//! `push`: S webhook subscriptions to a receiver in this process (axum on 127.0.0.1), then
//! (1) N events published at once: deliveries per second until the last one arrives, and
//! (2) M single events at a steady rate: publish-to-webhook latency, from the send time each
//! event carries in its `data` to its arrival at the receiver.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use hyper::Method;
use serde::Deserialize;

use crate::events::{self, now_us};
use crate::http::{self, Conn, Target};
use crate::machine::CpuProbe;
use crate::report::PushFigures;
use crate::server::{Instance, Setup};
use crate::stats::{percentiles, round1, round3};

#[derive(Clone)]
pub struct PushParams {
    pub subscriptions: usize,
    /// Each subscription names one party and each event is about one of them, so that every
    /// event matches exactly one subscription (otherwise every subscription gets every event).
    pub fanout: bool,
    pub events: usize,
    /// Each subscription's `maxEventsPerBatch` (1: one event a POST).
    pub batch: u32,
    /// Each subscription's `rateLimit`.
    pub rate_limit: Option<u32>,
    /// Single events published over 64 connections before the subscriptions exist and again
    /// while the throughput phase's backlog drains (0: neither).
    pub ingest_events: usize,
    pub paced_events: usize,
    pub paced_rate: f64,
    pub size: usize,
    pub run: String,
}

const VALIDATION: &str = "platform.events.validatesubscription";
/// The party of the fan-out shape's first subscription.
const FANOUT_PARTY: u64 = 60_000_000;

/// The events of the run: event `n`, about one subscription's party in the fan-out shape.
fn event_of(params: &PushParams) -> impl Fn(u64, Option<u64>) -> String + Clone + Send + 'static {
    let (run, size, fanout, parties) = (
        params.run.clone(),
        params.size,
        params.fanout,
        params.subscriptions as u64,
    );
    move |n, sent_us| {
        if fanout {
            events::about(&run, n, FANOUT_PARTY + n % parties, sent_us, size)
        } else {
            events::generic(&run, n, sent_us, size)
        }
    }
}

#[derive(Default)]
struct Received {
    validations: usize,
    deliveries: usize,
    duplicates: usize,
    latencies_us: Vec<u32>,
    seen: HashSet<(u32, u64)>,
    last: Option<Instant>,
    unreadable: usize,
}

/// What one POST carries: an event, or a batch of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum Posted {
    One(Delivered),
    Batch(Vec<Delivered>),
}

#[derive(Deserialize)]
struct Delivered {
    #[serde(rename = "type")]
    event_type: String,
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Data {
    n: u64,
    sent_us: Option<u64>,
}

type Shared = Arc<Mutex<Received>>;

async fn hook(State(state): State<Shared>, Path(k): Path<u32>, body: Bytes) -> StatusCode {
    let arrived = now_us();
    let Ok(posted) = serde_json::from_slice::<Posted>(&body) else {
        state.lock().expect("receiver state").unreadable += 1;
        return StatusCode::OK;
    };
    let events = match posted {
        Posted::One(event) => vec![event],
        Posted::Batch(events) => events,
    };
    let mut r = state.lock().expect("receiver state");
    for event in events {
        count(&mut r, k, arrived, event);
    }
    StatusCode::OK
}

fn count(r: &mut Received, k: u32, arrived: u64, event: Delivered) {
    if event.event_type == VALIDATION {
        r.validations += 1;
    } else if let Some(data) = event.data {
        if r.seen.insert((k, data.n)) {
            r.deliveries += 1;
            if let Some(sent) = data.sent_us {
                let us = arrived.saturating_sub(sent);
                r.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
            }
        } else {
            r.duplicates += 1;
        }
        r.last = Some(Instant::now());
    } else {
        r.unreadable += 1;
    }
}

/// Publishes `params.ingest_events` single events over 64 connections (run `round` of the
/// ingest figure, so that the two rounds' events differ); events accepted per second.
async fn ingest(target: &Target, params: &PushParams, round: u64) -> anyhow::Result<f64> {
    const FIRST: u64 = 1_000_000_000;
    let (t, run, size) = (target.clone(), params.run.clone(), params.size);
    let offset = FIRST * (round + 1);
    let outcome = http::run(
        target,
        64,
        params.ingest_events,
        move |i| {
            t.request(
                Method::POST,
                "/events/api/v1/events",
                Some(events::STRUCTURED),
                events::generic(&run, offset + i as u64, None, size),
            )
        },
        http::success,
    )
    .await?;
    if outcome.errors > 0 {
        bail!(
            "ingest: {} publishes failed (first: {})",
            outcome.errors,
            outcome.first_error.unwrap_or_default()
        );
    }
    Ok(outcome.per_second())
}

/// Waits until `done` holds of what was received, or `timeout` passes; says which.
async fn wait_for(state: &Shared, timeout: Duration, done: impl Fn(&Received) -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done(&state.lock().expect("receiver state")) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn run(setup: &Setup, params: &PushParams) -> anyhow::Result<PushFigures> {
    let instance = Instance::start(setup).await?;
    let result = scenario(&instance, params).await;
    let rss = instance.peak_rss_mib();
    instance.stop().await?;
    let mut figures = result?;
    figures.server_peak_rss_mib = rss;
    Ok(figures)
}

async fn scenario(instance: &Instance, params: &PushParams) -> anyhow::Result<PushFigures> {
    let state: Shared = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let app = Router::new()
        .route("/hook/{k}", post(hook))
        .with_state(state.clone());
    let receiver = tokio::spawn(async move { axum::serve(listener, app).await });

    let target = &instance.target;
    let ingest_alone = if params.ingest_events > 0 {
        Some(ingest(target, params, 0).await?)
    } else {
        None
    };
    for k in 0..params.subscriptions {
        let mut body = serde_json::json!({
            "endPoint": format!("http://127.0.0.1:{port}/hook/{k}"),
            "resourceFilter": events::RESOURCE,
        });
        if params.batch > 1 {
            body["maxEventsPerBatch"] = params.batch.into();
        }
        if let Some(rate) = params.rate_limit {
            body["rateLimit"] = rate.into();
        }
        if params.fanout {
            body["subjectFilter"] = format!("/party/{}", FANOUT_PARTY + k as u64).into();
        }
        let body = body.to_string();
        let reply = http::send_once(
            target,
            target.request(
                Method::POST,
                "/events/api/v1/subscriptions",
                Some("application/json"),
                body,
            ),
        )
        .await?;
        if reply.status.as_u16() != 201 {
            bail!(
                "creating subscription {k}: {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            );
        }
    }
    let subscriptions = params.subscriptions;
    // Handshakes go out at the workers' pace; a hundred thousand take a while.
    let patience = Duration::from_secs(60 + (subscriptions / 100) as u64);
    if !wait_for(&state, patience, |r| r.validations >= subscriptions).await {
        bail!(
            "the validation handshakes of {subscriptions} subscriptions did not all arrive within {} s",
            patience.as_secs()
        );
    }
    eprintln!(
        "push: {subscriptions} subscriptions validated; publishing {} events",
        params.events
    );

    // Throughput: everything at once, in batches.
    let receivers = if params.fanout { 1 } else { subscriptions };
    let expected = params.events * receivers;
    let event = event_of(params);
    let event_bytes = event(0, Some(now_us())).len();
    let batch = events::batch_events(event_bytes).min(100);
    let began = Instant::now();
    let probe = CpuProbe::start(instance.process.as_ref().map(crate::server::Process::pid));
    let batch_event = event.clone();
    let published = http::publish_batches(target, 2, params.events, batch, move |n| {
        batch_event(n as u64, Some(now_us()))
    })
    .await?;
    if published.errors > 0 {
        bail!(
            "publishing for push: {} batches failed (first: {})",
            published.errors,
            published.first_error.unwrap_or_default()
        );
    }
    // The same load as before the subscriptions existed, now while their backlog drains; its
    // events match every subscription too (not those of the fan-out shape, which name parties).
    let ingest_during = if params.ingest_events > 0 {
        Some(ingest(target, params, 1).await?)
    } else {
        None
    };
    let expected = expected
        + if params.fanout {
            0
        } else {
            params.ingest_events * receivers
        };
    let timeout = Duration::from_secs((120 + expected / 200) as u64);
    let complete = wait_for(&state, timeout, |r| r.deliveries >= expected).await;
    let cpu = probe.and_then(|p| p.finish());
    let (deliveries, duplicates, duration, latency_under_load) = {
        let mut r = state.lock().expect("receiver state");
        let end = if complete {
            r.last.unwrap_or_else(Instant::now)
        } else {
            Instant::now()
        };
        let latencies = std::mem::take(&mut r.latencies_us);
        let out = (
            r.deliveries,
            r.duplicates,
            end.duration_since(began),
            percentiles(latencies),
        );
        r.deliveries = 0;
        r.seen.clear();
        out
    };
    if !complete {
        eprintln!(
            "push: only {deliveries} of {expected} deliveries arrived within {} s",
            timeout.as_secs()
        );
    }
    let rate = deliveries as f64 / duration.as_secs_f64().max(1e-9);
    eprintln!(
        "push: {deliveries} deliveries in {:.2} s ({rate:.0}/s); now {} single events at {}/s",
        duration.as_secs_f64(),
        params.paced_events,
        params.paced_rate
    );

    // Latency: one event at a time at a steady rate, well below the throughput.
    let interval = Duration::from_secs_f64(1.0 / params.paced_rate.max(0.001));
    let mut conn = Conn::open(target).await?;
    let start = tokio::time::Instant::now();
    for j in 0..params.paced_events {
        tokio::time::sleep_until(start + interval * j as u32).await;
        let n = (params.events + j) as u64;
        let body = event(n, Some(now_us()));
        let reply = conn
            .send(target.request(
                Method::POST,
                "/events/api/v1/events",
                Some(events::STRUCTURED),
                body,
            ))
            .await
            .context("publishing a paced event")?;
        if !reply.status.is_success() {
            bail!(
                "publishing a paced event: {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            );
        }
    }
    let paced_expected = params.paced_events * receivers;
    if !wait_for(&state, Duration::from_secs(120), |r| {
        r.deliveries >= paced_expected
    })
    .await
    {
        eprintln!("push: not every paced delivery arrived within 120 s");
    }
    let (paced_deliveries, more_duplicates, latency) = {
        let mut r = state.lock().expect("receiver state");
        let latencies = std::mem::take(&mut r.latencies_us);
        (
            r.deliveries,
            r.duplicates - duplicates,
            percentiles(latencies),
        )
    };
    receiver.abort();
    Ok(PushFigures {
        shape: if params.fanout { "fanout" } else { "every" },
        subscriptions,
        events: params.events,
        batch: params.batch,
        rate_limit: params.rate_limit,
        ingest_alone_per_s: ingest_alone.map(round1),
        ingest_during_backlog_per_s: ingest_during.map(round1),
        deliveries_expected: expected,
        deliveries,
        duplicates: duplicates + more_duplicates,
        duration_s: round3(duration.as_secs_f64()),
        deliveries_per_s: round1(rate),
        latency_under_load,
        paced_events: params.paced_events,
        paced_rate_per_s: params.paced_rate,
        paced_deliveries,
        latency,
        server_peak_rss_mib: None,
        cpu,
    })
}
