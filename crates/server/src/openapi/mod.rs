//! The OpenAPI 3.1 document: generated from the handlers' `#[utoipa::path]` annotations as the
//! router registers them (`utoipa_axum`), so a route cannot be served without being documented.

pub mod cloudevent;
pub mod dialogs;
pub mod examples;
pub mod pages;
pub mod params;
pub mod problems;

use axum::Extension;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

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
    components(schemas(
        crate::problem::Problem,
        CloudEvent,
        AppEvent,
        dialogs::NewDialog,
        dialogs::DialogReplacement,
        dialogs::NewActivity,
        dialogs::NewTransmission,
        dialogs::DialogPatch
    )),
    modifiers(&BearerAuth),
    tags(
        (name = EVENTS, description = "Publish and read CloudEvents"),
        (name = SUBSCRIPTIONS, description = "Webhook subscriptions and their deliveries"),
        (name = crate::routes::dialogs::TAG, description = "The Dialogporten-compatible dialog service, which publishes Dialogporten's events"),
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

pub use cloudevent::{AppEvent, CloudEvent};

/// A component schema written as JSON Schema text, for the keywords utoipa's schema model does
/// not keep (`not`, `patternProperties`, `if`/`then`, `anyOf` inside properties). utoipa
/// refers to it by name; [`render`] puts the text in the document.
pub trait Written {
    const NAME: &'static str;
    fn json() -> serde_json::Value;
}

/// Declares one [`Written`] schema type per body.
macro_rules! written {
    ($($(#[$doc:meta])* $name:ident => $value:expr;)+) => {$(
        $(#[$doc])*
        pub struct $name;

        impl $crate::openapi::Written for $name {
            const NAME: &'static str = stringify!($name);
            fn json() -> serde_json::Value {
                $value
            }
        }

        // A placeholder that `render` replaces with the written schema.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
                utoipa::openapi::RefOr::T(utoipa::openapi::Schema::Object(
                    utoipa::openapi::Object::new(),
                ))
            }
        }

        impl utoipa::ToSchema for $name {
            fn name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed(stringify!($name))
            }
        }
    )+};
}
pub(crate) use written;

/// Every [`Written`] schema, by name.
fn written_schemas() -> Vec<(&'static str, serde_json::Value)> {
    fn entry<W: Written>() -> (&'static str, serde_json::Value) {
        (W::NAME, W::json())
    }
    vec![
        entry::<CloudEvent>(),
        entry::<AppEvent>(),
        entry::<dialogs::NewDialog>(),
        entry::<dialogs::DialogReplacement>(),
        entry::<dialogs::NewActivity>(),
        entry::<dialogs::NewTransmission>(),
        entry::<dialogs::DialogPatch>(),
    ]
}

/// The document as served: utoipa's, with the written schemas in place of their placeholders.
pub fn render(openapi: &utoipa::openapi::OpenApi) -> Result<String, serde_json::Error> {
    let mut document = serde_json::to_value(openapi)?;
    if let Some(schemas) = document
        .pointer_mut("/components/schemas")
        .and_then(serde_json::Value::as_object_mut)
    {
        for (name, schema) in written_schemas() {
            schemas.insert(name.to_owned(), schema);
        }
    }
    serde_json::to_string(&document)
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
