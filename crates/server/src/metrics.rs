//! Prometheus metrics: the recorder, request counts and latencies per route, and the gauges read
//! at scrape time (queue depth and age, subscriptions, live streams).

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};

use crate::app::AppState;

/// Latency buckets in seconds, from a cached read to a slow webhook.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl Metrics {
    /// Installs the process-wide recorder; every `metrics::` call from here on is recorded.
    pub fn install() -> Result<Metrics, BuildError> {
        let handle = PrometheusBuilder::new()
            .set_buckets(BUCKETS)?
            .install_recorder()?;
        let upkeep = handle.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                upkeep.run_upkeep();
            }
        });
        Ok(Metrics { handle })
    }

    /// Counts this live stream for as long as the guard lives.
    pub fn stream_client(&self) -> StreamClient {
        gauge!("hendelse_stream_clients").increment(1.0);
        StreamClient
    }
}

pub struct StreamClient;

impl Drop for StreamClient {
    fn drop(&mut self) {
        gauge!("hendelse_stream_clients").decrement(1.0);
    }
}

/// Counts every routed request by route, method and status, and times it.
pub async fn track(matched: Option<MatchedPath>, request: Request, next: Next) -> Response {
    let route = matched.map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    histogram!("hendelse_http_request_seconds", "route" => route.clone(), "method" => method.clone())
        .record(started.elapsed().as_secs_f64());
    counter!("hendelse_http_requests_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    response
}

/// `GET /metrics`
#[utoipa::path(
    get,
    operation_id = "metrics",
    path = "/metrics",
    tag = crate::openapi::OPERATIONS,
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain; version=0.0.4"))
)]
pub async fn render(State(state): State<AppState>) -> Response {
    match state.push.queue_depth().await {
        Ok((depth, oldest)) => {
            gauge!("hendelse_delivery_queue_depth").set(depth as f64);
            let age = oldest.map_or(0.0, |t| {
                (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0
            });
            gauge!("hendelse_delivery_queue_oldest_seconds").set(age);
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read the delivery queue"),
    }
    // Counted in the store: reading 100,000 subscriptions per scrape would cost more than the
    // scrape is worth.
    match state.push.subscription_states().await {
        Ok(states) => {
            gauge!("hendelse_subscriptions").set((states.healthy + states.failing) as f64);
            for (name, n) in [
                ("healthy", states.healthy),
                ("failing", states.failing),
                ("disabled", states.disabled),
            ] {
                gauge!("hendelse_subscriptions_by_state", "state" => name).set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot count subscriptions"),
    }
    gauge!("hendelse_store_last_seq").set(*state.tip.borrow() as f64);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics.handle.render(),
    )
        .into_response()
}
