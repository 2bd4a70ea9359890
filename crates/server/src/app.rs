//! The shared state of the API and the router that serves it.

use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use hendelse_auth::TokenVerifier;
use hendelse_model::MAX_EVENT_BYTES;
use hendelse_push::SubscriptionService;
use hendelse_store::{EventStore, Ingest, PushStore};
use tokio::sync::watch;

use crate::events::EventService;
use crate::metrics::Metrics;
use crate::openapi::{ApiDoc, Document};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What every handler reads, shared: axum clones the state for each extractor of each request,
/// and cloning the fields one by one (a dozen reference counts) showed in the publish profile.
#[derive(Clone)]
pub struct AppState(Arc<AppContext>);

impl AppState {
    pub fn new(context: AppContext) -> Self {
        AppState(Arc::new(context))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppContext;

    fn deref(&self) -> &AppContext {
        &self.0
    }
}

pub struct AppContext {
    pub store: Arc<dyn EventStore>,
    pub ingest: Ingest,
    pub verifier: Arc<TokenVerifier>,
    /// Publishing and reading events: the rules between the routes and the store.
    pub events: EventService,
    /// The externally visible base URL (`https://events.example`), when configured; otherwise
    /// links are built from the request's `Host`.
    pub public_url: Option<Arc<str>>,
    pub push: Arc<dyn PushStore>,
    pub subscriptions: SubscriptionService,
    /// The highest committed position of the log, on this node or any other.
    pub tip: watch::Receiver<i64>,
    /// The one reader of new events that every live stream of this node follows.
    pub live: crate::live::LiveTail,
    /// Turns true when the server begins to shut down; long-lived responses end then.
    pub stopping: watch::Receiver<bool>,
    pub metrics: Metrics,
    /// The Dialogporten-compatible dialog service.
    pub dialogs: hendelse_dialog::DialogService,
}

/// Every route, registered together with its OpenAPI description, so that the document and the
/// router cannot disagree.
pub fn documented_routes() -> OpenApiRouter<AppState> {
    use crate::routes::{dialogs, health, publish, query, stream, subscriptions};
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(publish::publish, query::generic_events))
        .routes(routes!(publish::publish_app))
        .routes(routes!(query::app_party))
        .routes(routes!(query::app_events))
        .routes(routes!(query::app_event))
        .routes(routes!(stream::generic))
        .routes(routes!(stream::app_party))
        .routes(routes!(subscriptions::create, subscriptions::list))
        .routes(routes!(
            subscriptions::get,
            subscriptions::change,
            subscriptions::delete
        ))
        .routes(routes!(subscriptions::deliveries))
        .routes(routes!(subscriptions::redrive))
        .routes(routes!(subscriptions::replay))
        .routes(routes!(subscriptions::enable))
        .routes(routes!(health::health))
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(crate::metrics::render))
        .routes(routes!(crate::openapi::document))
        .routes(routes!(dialogs::create, dialogs::list))
        .routes(routes!(
            dialogs::get,
            dialogs::replace,
            dialogs::patch,
            dialogs::delete
        ))
        .routes(routes!(dialogs::restore))
        .routes(routes!(dialogs::purge))
        .routes(routes!(dialogs::add_activity))
        .routes(routes!(dialogs::add_transmission))
        .routes(routes!(dialogs::enduser_list))
        .routes(routes!(dialogs::enduser_get))
}

pub fn router(state: AppState) -> Router {
    let (api, openapi) = documented_routes().split_for_parts();
    let document = crate::openapi::render(&openapi).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot render the OpenAPI document");
        "{}".to_owned()
    });
    api.route_layer(axum::middleware::from_fn(crate::metrics::track))
        .route_layer(axum::middleware::from_fn(crate::telemetry::trace_request))
        .layer(Extension(Document(Arc::from(document))))
        .layer(DefaultBodyLimit::max(MAX_EVENT_BYTES))
        // A client that stops sending its body mid-way is refused rather than waited on for ever
        // (the head has its own timeout in listen.rs); bodies of GETs, streams included, are empty.
        .layer(RequestBodyTimeoutLayer::new(
            crate::listen::HEADER_READ_TIMEOUT,
        ))
        .layer(CatchPanicLayer::new())
        .layer(axum::middleware::from_fn(crate::problem::problem_details))
        .with_state(state)
}
