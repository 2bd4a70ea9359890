//! The OpenAPI 3.1 document: generated from the handlers' `#[utoipa::path]` annotations as the
//! router registers them (`utoipa_axum`), so a route cannot be served without being documented.

pub mod pages;
pub mod params;
pub mod problems;

use axum::Extension;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Tags group the operations as the README's sections do.
pub const EVENTS: &str = "events";
pub const SUBSCRIPTIONS: &str = "subscriptions";
pub const OPERATIONS: &str = "operations";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hendelse",
        description = "CloudEvents platform compatible with the Altinn Events API: publish, query \
                       with a cursor, stream, and receive events by webhook. Every error is \
                       application/problem+json (RFC 9457).",
        license(name = "MIT")
    ),
    components(schemas(crate::problem::Problem, CloudEvent)),
    modifiers(&BearerAuth),
    tags(
        (name = EVENTS, description = "Publish and read CloudEvents"),
        (name = SUBSCRIPTIONS, description = "Webhook subscriptions and their deliveries"),
        (name = OPERATIONS, description = "Health, metrics and this document")
    )
)]
pub struct ApiDoc;

/// Declares the bearer token scheme the operations name in `security(("bearer" = []))`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An Altinn-style JWT: org tokens carry urn:altinn:org, end-user tokens pid; \
                         scopes altinn:events.publish / altinn:events.subscribe",
                    ))
                    .build(),
            ),
        );
    }
}

/// A CloudEvent in the JSON format (CloudEvents 1.0.2) with Altinn's extension attributes; any
/// other extension attribute (lower-case letters and digits) is kept as published.
#[derive(ToSchema)]
#[allow(dead_code)] // describes the document only
pub struct CloudEvent {
    /// Always "1.0".
    specversion: String,
    id: String,
    /// A URI-reference.
    source: String,
    #[schema(rename = "type")]
    event_type: String,
    subject: Option<String>,
    /// RFC 3339.
    time: Option<String>,
    datacontenttype: Option<String>,
    dataschema: Option<String>,
    /// `urn:altinn:resource:…`.
    resource: Option<String>,
    resourceinstance: Option<String>,
    alternativesubject: Option<String>,
    data: Option<serde_json::Value>,
    /// Base64; an event carries either `data` or `data_base64`.
    data_base64: Option<String>,
}

/// The document as the router built it, served at `/openapi.json`.
#[derive(Clone)]
pub struct Document(pub Arc<str>);

/// `GET /openapi.json`
#[utoipa::path(
    get,
    operation_id = "openApiDocument",
    path = "/openapi.json",
    tag = OPERATIONS,
    responses((status = 200, description = "This OpenAPI 3.1 document", content_type = "application/json"))
)]
pub async fn document(Extension(doc): Extension<Document>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        doc.0.to_string(),
    )
        .into_response()
}
