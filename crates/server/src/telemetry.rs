//! Spans of the server's own, exported over OTLP/HTTP when `--otlp-endpoint` is given (the
//! `otel` feature, on by default): one per API request, a child of the caller's `traceparent`,
//! and one per webhook attempt, a child of its publish request's span, whose context the receiver
//! gets as `traceparent`. Export off, the server makes no spans, and a delivery carries the
//! producer's trace context as it came. Span attributes never hold a token, a secret, a query or
//! an endpoint's path: only methods, routes, statuses, hosts and ids.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use hendelse_push::spans::{AttemptSpans, PassThrough};

use crate::cli::ServeArgs;

/// Whether spans are exported; set once, at start.
static EXPORTING: AtomicBool = AtomicBool::new(false);

fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The exporter, when spans are exported; flushed by [`Telemetry::shutdown`].
pub struct Telemetry {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

/// What the log subscriber adds to export spans.
#[cfg(feature = "otel")]
pub type Tracer = opentelemetry_sdk::trace::Tracer;
#[cfg(not(feature = "otel"))]
pub type Tracer = ();

impl Telemetry {
    /// Sets up the export the arguments ask for (none without `--otlp-endpoint`); the tracer
    /// goes to the log subscriber. The collector need not be up: spans it misses are dropped.
    pub fn start(args: &ServeArgs) -> anyhow::Result<(Telemetry, Option<Tracer>)> {
        #[cfg(feature = "otel")]
        {
            let Some(endpoint) = &args.otlp_endpoint else {
                return Ok((Telemetry { provider: None }, None));
            };
            let (provider, tracer) = otel::provider(endpoint, args.otlp_protocol)?;
            EXPORTING.store(true, Ordering::Relaxed);
            Ok((
                Telemetry {
                    provider: Some(provider),
                },
                Some(tracer),
            ))
        }
        #[cfg(not(feature = "otel"))]
        {
            // Refused by the arguments' validation before this.
            let _ = args;
            Ok((Telemetry {}, None))
        }
    }

    /// How webhook attempts take part in traces.
    pub fn attempt_spans(&self) -> Arc<dyn AttemptSpans> {
        if exporting() {
            Arc::new(Exported)
        } else {
            Arc::new(PassThrough)
        }
    }

    /// Sends the spans not yet exported (the batch exporter holds them for a moment).
    pub async fn shutdown(self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider {
            let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(e)) = flushed {
                tracing::warn!(error = %e, "cannot send the last spans to the OTLP collector");
            }
        }
    }
}

/// Attempts whose spans are exported.
#[derive(Debug)]
struct Exported;

impl AttemptSpans for Exported {
    fn enabled(&self) -> bool {
        true
    }

    fn adopt(&self, span: &tracing::Span, parent: Option<&str>) -> Option<String> {
        adopt(span, parent).or_else(|| parent.map(str::to_owned))
    }
}

/// Makes `span` a child of `parent` (a W3C `traceparent`) and answers the span's own.
#[cfg(feature = "otel")]
fn adopt(span: &tracing::Span, parent: Option<&str>) -> Option<String> {
    otel::adopt(span, parent)
}

#[cfg(not(feature = "otel"))]
fn adopt(_span: &tracing::Span, _parent: Option<&str>) -> Option<String> {
    None
}

/// The request's W3C `traceparent`, if it carries a valid one (an invalid one is ignored, as the
/// W3C spec asks).
fn request_traceparent(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(hendelse_model::trace::traceparent)
}

/// The trace context a publish keeps with its events, for their deliveries: the request span's
/// while spans are exported (so that each attempt hangs under the publish), else the caller's.
pub fn publish_traceparent(headers: &HeaderMap) -> Option<String> {
    if exporting()
        && let Some(own) = adopt(&tracing::Span::current(), None)
    {
        return Some(own);
    }
    request_traceparent(headers).map(str::to_owned)
}

/// The span of a publish's wait for its group commit (queued, written, synced), while spans are
/// exported.
pub fn commit_span(events: usize) -> tracing::Span {
    if !exporting() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "commit",
        otel.name = "commit events",
        // Signed: OTLP has no unsigned integers, and an unsigned one is exported as text.
        hendelse.events = i64::try_from(events).unwrap_or(i64::MAX),
    )
}

/// Runs each routed request in a server span named by its method and route, while spans are
/// exported.
pub async fn trace_request(matched: Option<MatchedPath>, request: Request, next: Next) -> Response {
    if !exporting() {
        return next.run(request).await;
    }
    use tracing::Instrument;
    let route = matched.map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let span = tracing::info_span!(
        "request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    adopt(&span, request_traceparent(request.headers()));
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    response
}

#[cfg(feature = "otel")]
mod otel {
    use std::collections::HashMap;
    use std::time::Duration;

    use anyhow::Context;
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use crate::cli::OtlpProtocol;

    /// The exporter to `endpoint` (`/v1/traces` added) and the tracer of the server's spans.
    pub fn provider(
        endpoint: &str,
        protocol: OtlpProtocol,
    ) -> anyhow::Result<(SdkTracerProvider, Tracer)> {
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(match protocol {
                OtlpProtocol::Protobuf => Protocol::HttpBinary,
                OtlpProtocol::Json => Protocol::HttpJson,
            })
            .with_endpoint(url.clone())
            .with_timeout(Duration::from_secs(10))
            .build()
            .with_context(|| format!("cannot set up span export to {url}"))?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("hendelse");
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer("hendelse");
        Ok((provider, tracer))
    }

    pub fn adopt(span: &tracing::Span, parent: Option<&str>) -> Option<String> {
        let propagator = TraceContextPropagator::new();
        if let Some(parent) = parent {
            let carrier = HashMap::from([("traceparent".to_owned(), parent.to_owned())]);
            // A span that is already closed, or not recorded, keeps no parent: nothing to do.
            let _ = span.set_parent(propagator.extract(&carrier));
        }
        let mut carrier: HashMap<String, String> = HashMap::new();
        propagator.inject_context(&span.context(), &mut carrier);
        carrier.remove("traceparent")
    }
}
