//! The shared state of the API and the router that serves it.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use hendelse_auth::{Authorizer, TokenVerifier};
use hendelse_model::MAX_EVENT_BYTES;
use hendelse_push::EndpointPolicy;
use hendelse_store::{EventStore, Ingest, PushStore};
use tokio::sync::{Notify, watch};

use crate::metrics::Metrics;
use tower_http::catch_panic::CatchPanicLayer;

use crate::routes;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn EventStore>,
    pub ingest: Ingest,
    pub verifier: Arc<TokenVerifier>,
    pub authorizer: Arc<dyn Authorizer>,
    /// The externally visible base URL (`https://events.example`), when configured; otherwise
    /// links are built from the request's `Host`.
    pub public_url: Option<Arc<str>>,
    pub push: Arc<dyn PushStore>,
    pub endpoint_policy: EndpointPolicy,
    /// Wakes this node's delivery workers, when it runs them.
    pub push_wake: Option<Arc<Notify>>,
    /// The highest committed position of the log, on this node or any other.
    pub tip: watch::Receiver<i64>,
    pub metrics: Metrics,
}

impl AppState {
    /// Tells this node's delivery workers that there is work now rather than at their next poll.
    pub fn wake_workers(&self) {
        if let Some(wake) = &self.push_wake {
            wake.notify_one();
        }
    }
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route(
            "/events/api/v1/events",
            post(routes::publish::publish).get(routes::query::generic_events),
        )
        .route("/events/api/v1/app", post(routes::publish::publish_app))
        .route("/events/api/v1/app/party", get(routes::query::app_party))
        .route(
            "/events/api/v1/app/party/stream",
            get(routes::stream::app_party),
        )
        .route("/events/api/v1/events/stream", get(routes::stream::generic))
        .route(
            "/events/api/v1/app/{org}/{app}",
            get(routes::query::app_events),
        )
        .route(
            "/events/api/v1/subscriptions",
            post(routes::subscriptions::create).get(routes::subscriptions::list),
        )
        .route(
            "/events/api/v1/subscriptions/{id}",
            get(routes::subscriptions::get).delete(routes::subscriptions::delete),
        )
        .route(
            "/events/api/v1/subscriptions/{id}/deliveries",
            get(routes::subscriptions::deliveries),
        )
        .route(
            "/events/api/v1/subscriptions/{id}/redrive",
            post(routes::subscriptions::redrive),
        )
        .route("/health", get(routes::health::ready))
        .route("/health/live", get(routes::health::live))
        .route("/health/ready", get(routes::health::ready))
        .route("/metrics", get(crate::metrics::render))
        .route_layer(axum::middleware::from_fn(crate::metrics::track));
    api.layer(DefaultBodyLimit::max(MAX_EVENT_BYTES))
        .layer(CatchPanicLayer::new())
        .layer(axum::middleware::from_fn(crate::problem::problem_details))
        .with_state(state)
}
