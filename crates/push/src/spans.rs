//! The span of each webhook attempt. The engine makes it with `tracing`; whether it joins a
//! distributed trace, and which `traceparent` the receiver is sent, is the server's telemetry's to
//! say, which the engine sees only through [`AttemptSpans`] (so that it needs no OpenTelemetry).

use std::fmt;

/// How attempts take part in traces.
pub trait AttemptSpans: Send + Sync + fmt::Debug {
    /// Whether attempts make spans at all. Without, they make none and log as before.
    fn enabled(&self) -> bool;

    /// Makes `span` a child of `parent` (a W3C `traceparent`: the publish request's, or the
    /// event's own) and answers the `traceparent` to send: the span's when spans are exported,
    /// so that the receiver's span hangs under the attempt; else `parent` as it came.
    fn adopt(&self, span: &tracing::Span, parent: Option<&str>) -> Option<String>;
}

/// No spans of our own: the producer's trace context is passed on as it came.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassThrough;

impl AttemptSpans for PassThrough {
    fn enabled(&self) -> bool {
        false
    }

    fn adopt(&self, _span: &tracing::Span, parent: Option<&str>) -> Option<String> {
        parent.map(str::to_owned)
    }
}
