//! RFC 7807 / RFC 9457 problem details: the one error type of the API and its rendering, plus the
//! middleware that turns every other error response (router 404/405, body limits, panics) into one.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hendelse_auth::AuthError;
use hendelse_dialog::DialogError;
use hendelse_model::ValidationError;
use hendelse_push::SubscriptionError;
use http_body_util::BodyExt;

use crate::events::EventError;

pub use hendelse_wire::Problem;
pub use hendelse_wire::problem::PROBLEM_JSON;

/// Error bodies larger than this are not read back when wrapping them.
const MAX_WRAPPED_BODY: usize = 64 * 1024;

/// The problem of `status`, with its RFC section as type and reason as title.
pub fn problem(status: StatusCode, detail: impl Into<String>) -> Problem {
    Problem {
        kind: type_uri(status).to_owned(),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail: Some(detail.into()),
        errors: BTreeMap::new(),
        trace_id: None,
    }
}

/// A problem that names each invalid field and what is wrong with it.
fn with_field_errors(status: StatusCode, what: &str, invalid: &ValidationError) -> Problem {
    let mut p = problem(status, format!("{what} is not valid: {invalid}"));
    for e in &invalid.errors {
        p.errors
            .entry(e.field.clone())
            .or_default()
            .push(e.message.clone());
    }
    p
}

/// The RFC 9110 section of a status, as ASP.NET (and so Altinn) writes problem types.
fn type_uri(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "https://tools.ietf.org/html/rfc9110#section-15.5.1",
        401 => "https://tools.ietf.org/html/rfc9110#section-15.5.2",
        403 => "https://tools.ietf.org/html/rfc9110#section-15.5.4",
        404 => "https://tools.ietf.org/html/rfc9110#section-15.5.5",
        405 => "https://tools.ietf.org/html/rfc9110#section-15.5.6",
        406 => "https://tools.ietf.org/html/rfc9110#section-15.5.7",
        408 => "https://tools.ietf.org/html/rfc9110#section-15.5.9",
        409 => "https://tools.ietf.org/html/rfc9110#section-15.5.10",
        410 => "https://tools.ietf.org/html/rfc9110#section-15.5.11",
        411 => "https://tools.ietf.org/html/rfc9110#section-15.5.12",
        412 => "https://tools.ietf.org/html/rfc9110#section-15.5.13",
        413 => "https://tools.ietf.org/html/rfc9110#section-15.5.14",
        414 => "https://tools.ietf.org/html/rfc9110#section-15.5.15",
        415 => "https://tools.ietf.org/html/rfc9110#section-15.5.16",
        422 => "https://tools.ietf.org/html/rfc9110#section-15.5.21",
        429 => "https://tools.ietf.org/html/rfc6585#section-4",
        500 => "https://tools.ietf.org/html/rfc9110#section-15.6.1",
        503 => "https://tools.ietf.org/html/rfc9110#section-15.6.4",
        507 => "https://tools.ietf.org/html/rfc4918#section-11.5",
        504 => "https://tools.ietf.org/html/rfc9110#section-15.6.5",
        _ => "about:blank",
    }
}

/// Every way a request can fail, rendered as problem details at the edge.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    #[error("{0}")]
    Unauthorized(#[from] AuthError),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A request body other than an event with field errors (400, with `errors`).
    #[error("{0}")]
    InvalidRequest(ValidationError),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Gone(String),
    /// `If-Match` does not name the current revision.
    #[error("{0}")]
    PreconditionFailed(String),
    /// The service cannot take the request now; nothing was stored. Retry after the given seconds.
    #[error("{message}")]
    Unavailable { message: String, retry_after: u32 },
    /// The store has no room for the write (a full disk); nothing was stored. Retry once space
    /// has been freed.
    #[error("{message}")]
    InsufficientStorage { message: String, retry_after: u32 },
    /// A fault of ours; the detail shown is generic and the cause, with its sources, is logged.
    #[error("internal error: {0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::InsufficientStorage { .. } => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<hendelse_store::StoreError> for ApiError {
    fn from(e: hendelse_store::StoreError) -> Self {
        if e.is_storage_full() {
            ApiError::storage_full()
        } else if e.is_unavailable() {
            ApiError::Unavailable {
                message: "the event store is not reachable; try again".into(),
                retry_after: 1,
            }
        } else {
            ApiError::Internal(e.into())
        }
    }
}

/// An error and its causes on one line (for the log, and the CLI's one-line reason), leaving out
/// a cause whose text the line already holds: many error types repeat their source in their own
/// message.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    let mut next = Some(error);
    while let Some(cause) = next {
        let text = cause.to_string().replace('\n', " ");
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        next = cause.source();
    }
    line
}

impl ApiError {
    /// A fault of ours, with what we were doing when `source` happened.
    pub fn internal(
        what: impl std::fmt::Display + Send + Sync + 'static,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> ApiError {
        ApiError::Internal(anyhow::Error::new(source).context(what).into())
    }

    fn storage_full() -> ApiError {
        ApiError::InsufficientStorage {
            message: "the event store's disk is full; nothing was stored, try again once space \
                      has been freed"
                .into(),
            retry_after: 5,
        }
    }
}

impl From<hendelse_store::IngestError> for ApiError {
    fn from(e: hendelse_store::IngestError) -> Self {
        use hendelse_store::IngestError;
        match e {
            IngestError::Overloaded => ApiError::Unavailable {
                message:
                    "too many publishes are waiting to be stored; nothing was stored, try again"
                        .into(),
                retry_after: 1,
            },
            IngestError::Closed => ApiError::Unavailable {
                message: "the service is shutting down; nothing was stored, try again".into(),
                retry_after: 1,
            },
            IngestError::Interrupted => ApiError::Unavailable {
                message: "the commit was interrupted; the events may or may not be stored, \
                          publish them again (the same source and id is stored once)"
                    .into(),
                retry_after: 1,
            },
            // One line for the writer's failure is logged by the writer; not one per request.
            IngestError::Store { full: true, .. } => ApiError::storage_full(),
            IngestError::Store { message, .. } => {
                tracing::debug!(error = %message, "publish failed to commit");
                ApiError::Unavailable {
                    message: "the events could not be committed; nothing was stored, try again"
                        .into(),
                    retry_after: 1,
                }
            }
        }
    }
}

// The services' errors, each to the status it means.

impl From<hendelse_auth::DecisionError> for ApiError {
    fn from(e: hendelse_auth::DecisionError) -> Self {
        // Failing closed: never a permit by default, never a 500; the client may try again.
        tracing::warn!(error = %e, "a request waits for the authorization decision point");
        ApiError::Unavailable {
            message: "access cannot be decided now (the authorization decision point does not answer); try again".into(),
            retry_after: 5,
        }
    }
}

impl From<EventError> for ApiError {
    fn from(e: EventError) -> Self {
        match e {
            EventError::Invalid(v) => ApiError::Invalid(v),
            EventError::Forbidden(m) => ApiError::Forbidden(m),
            EventError::Ingest(e) => ApiError::from(e),
            EventError::Store(e) => ApiError::from(e),
            EventError::Decision(e) => ApiError::from(e),
            internal @ EventError::Internal { .. } => ApiError::Internal(internal.into()),
        }
    }
}

impl From<SubscriptionError> for ApiError {
    fn from(e: SubscriptionError) -> Self {
        match e {
            SubscriptionError::Invalid(m) => ApiError::BadRequest(m),
            SubscriptionError::Forbidden(m) => ApiError::Forbidden(m),
            not_found @ SubscriptionError::NotFound(_) => ApiError::NotFound(not_found.to_string()),
            SubscriptionError::Conflict(m) => ApiError::Conflict(m),
            SubscriptionError::Store(e) => ApiError::from(e),
            SubscriptionError::Undecided(e) => ApiError::from(e),
            internal @ SubscriptionError::Internal(_) => ApiError::Internal(internal.into()),
        }
    }
}

impl From<DialogError> for ApiError {
    fn from(e: DialogError) -> Self {
        match e {
            DialogError::Invalid(v) => ApiError::InvalidRequest(v),
            DialogError::BadRequest(m) => ApiError::BadRequest(m),
            DialogError::Forbidden(m) => ApiError::Forbidden(m),
            DialogError::NotFound(m) => ApiError::NotFound(m),
            DialogError::Conflict(m) => ApiError::Conflict(m),
            DialogError::Gone(m) => ApiError::Gone(m),
            DialogError::PreconditionFailed(m) => ApiError::PreconditionFailed(m),
            DialogError::Store(e) => ApiError::from(e),
            internal @ DialogError::Internal { .. } => ApiError::Internal(internal.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut problem = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(error = %error_chain(cause.as_ref()), "request failed");
                problem(status, "an internal error occurred; it has been logged")
            }
            ApiError::Invalid(v) => with_field_errors(status, "the event", v),
            ApiError::InvalidRequest(v) => with_field_errors(status, "the request", v),
            other => problem(status, other.to_string()),
        };
        if let ApiError::Unauthorized(_) = &self {
            problem.title = "Unauthorized".into();
        }
        let mut response = problem_response(&problem);
        match &self {
            ApiError::Unauthorized(_) => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Unavailable { retry_after, .. }
            | ApiError::InsufficientStorage { retry_after, .. } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            _ => {}
        }
        response
    }
}

fn problem_response(problem: &Problem) -> Response {
    let body = serde_json::to_vec(problem).unwrap_or_default();
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
        body,
    )
        .into_response()
}

/// Gives every request a trace id (W3C `traceparent` form) and makes sure every error response is
/// problem details carrying it, whoever produced the error.
pub async fn problem_details(request: Request, next: Next) -> Response {
    let trace_id = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() == 55 && v.is_ascii())
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let trace = uuid::Uuid::new_v4().simple().to_string();
            let span = &uuid::Uuid::new_v4().simple().to_string()[..16];
            format!("00-{trace}-{span}-00")
        });
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match http_body_util::Limited::new(body, MAX_WRAPPED_BODY)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Default::default(),
    };
    let is_problem = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    let mut problem = if is_problem {
        serde_json::from_slice::<serde_json::Value>(&bytes).ok()
    } else {
        None
    }
    .unwrap_or_else(|| {
        let text = String::from_utf8_lossy(&bytes).trim().to_owned();
        // axum's own texts for these name its internals rather than the client's mistake.
        let ours = matches!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let detail = if text.is_empty() || ours {
            default_detail(status)
        } else {
            text
        };
        serde_json::to_value(problem(status, detail)).unwrap_or_default()
    });
    if let Some(map) = problem.as_object_mut() {
        map.entry("traceId").or_insert_with(|| trace_id.into());
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    Response::from_parts(
        parts,
        Body::from(serde_json::to_vec(&problem).unwrap_or_default()),
    )
}

fn default_detail(status: StatusCode) -> String {
    match status {
        StatusCode::NOT_FOUND => "no such route; see /openapi.json for the API".into(),
        StatusCode::METHOD_NOT_ALLOWED => "this route does not accept that method".into(),
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is larger than 1 MiB".into(),
        StatusCode::INTERNAL_SERVER_ERROR => {
            "an internal error occurred; it has been logged".into()
        }
        other => other.canonical_reason().unwrap_or("error").to_owned(),
    }
}

#[cfg(test)]
mod chain_tests {
    use super::{ApiError, error_chain};

    #[test]
    fn an_internal_error_logs_what_was_done_and_every_cause() {
        let error = ApiError::internal(
            "cannot render the app event",
            std::io::Error::other("the disk said no"),
        );
        assert_eq!(
            error_chain(&error),
            "internal error: cannot render the app event: the disk said no"
        );
    }
}
