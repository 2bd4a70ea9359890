//! Webhook subscriptions, in Altinn's shapes: create (with the validation handshake), list, read
//! and delete one's own, and the deliveries of one with redrive of its dead letters. The rules are
//! `hendelse_push::SubscriptionService`'s; these handlers extract, call it and render.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::SecondsFormat;
use hendelse_store::push::{DeliveryView, Subscription as Stored};
use hendelse_wire::paths::SUBSCRIPTIONS as BASE;
use hendelse_wire::subscriptions::{
    Delivery, DeliveryList, IMMUTABLE_FIELDS, Redriven, ReplayRequest, Replayed, Subscription,
    SubscriptionHealth, SubscriptionList, SubscriptionPatch, SubscriptionRequest,
};
use serde::Deserialize;
use serde_json::json;

use crate::app::AppState;
use crate::caller::Caller;
use crate::openapi::params::{DeliveryStateFilter, SubscriptionId};
use crate::openapi::problems::{BadRequest, KeyReused, NotFound, Refusals, StorageFull, TooLarge};
use crate::params;
use crate::problem::ApiError;

/// A subscription as the API shows it; the secret never leaves the store.
fn view(s: Stored) -> Subscription {
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
    };
    let health = SubscriptionHealth {
        state: hendelse_push::health::state(&s).to_owned(),
        consecutive_failures: s.health.consecutive_failures,
        failing_since: time(s.health.failing_since),
        last_success: time(s.health.last_success),
        last_failure: time(s.health.last_failure),
        last_error: s.health.last_error.clone(),
        resting_until: time(s.health.rest_until.filter(|t| *t > chrono::Utc::now())),
    };
    Subscription {
        id: s.id,
        end_point: s.spec.end_point,
        resource_filter: s.spec.resource_filter,
        source_filter: s.spec.source_filter,
        subject_filter: s.spec.subject_filter,
        alternative_subject_filter: s.spec.alternative_subject_filter,
        type_filter: s.spec.type_filter,
        include_subunits: s.spec.include_subunits,
        consumer: s.spec.consumer,
        created_by: s.spec.created_by,
        created: s.created.to_rfc3339_opts(SecondsFormat::Micros, true),
        validated: s.validated,
        enabled: s.enabled,
        disabled_reason: s.disabled_reason,
        has_secret: s.spec.secret.is_some(),
        max_events_per_batch: s.spec.batching.max_events,
        max_wait_ms: s.spec.batching.max_wait_ms,
        rate_limit: s.spec.rate_limit,
        previous_secret_until: time(
            s.previous_secret
                .as_ref()
                .map(|(_, until)| *until)
                .filter(|until| *until > chrono::Utc::now()),
        ),
        health,
    }
}

fn delivery_view(d: DeliveryView) -> Delivery {
    Delivery {
        id: d.id,
        event_id: d.event_id,
        webhook_id: d.webhook_id,
        event_count: d.event_count,
        state: d.state.as_str().to_owned(),
        attempts: d.attempts,
        next_attempt: d
            .next_attempt
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
        last_status: d.last_status,
        last_error: d.last_error,
        replay_id: d.replay,
        history: d
            .history
            .into_iter()
            .map(|a| {
                json!({
                    "at": a.at.to_rfc3339_opts(SecondsFormat::Millis, true),
                    "status": a.status,
                    "error": a.error,
                })
            })
            .collect(),
    }
}

/// `POST /events/api/v1/subscriptions`
#[utoipa::path(
    post,
    operation_id = "createSubscription",
    path = "/events/api/v1/subscriptions",
    tag = crate::openapi::SUBSCRIPTIONS,
    description = "Create a webhook subscription; a validation event is posted to the endpoint first.",
    request_body = SubscriptionRequest,
    responses(
        (status = 201, description = "Created", body = Subscription, headers(("Location" = String))),
        BadRequest, TooLarge, Refusals, StorageFull
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // A caller without the scope learns that before anything about its body.
    state.subscriptions.may_subscribe(&caller)?;
    let request: SubscriptionRequest = crate::body::json(&body, "a subscription")?;
    let base = params::base_url(state.public_url.as_deref(), &headers);
    let created = state.subscriptions.create(&caller, request, &base).await?;
    let location = HeaderValue::from_str(&format!("{BASE}/{}", created.id))
        .map_err(|e| ApiError::internal("the Location is not a header value", e))?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(view(created)),
    )
        .into_response())
}

/// `GET /events/api/v1/subscriptions`
#[utoipa::path(
    get,
    operation_id = "listSubscriptions",
    path = "/events/api/v1/subscriptions",
    tag = crate::openapi::SUBSCRIPTIONS,
    responses(
        (status = 200, description = "The caller's subscriptions", body = SubscriptionList),
        Refusals
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<SubscriptionList>, ApiError> {
    let subscriptions: Vec<Subscription> = state
        .subscriptions
        .list(&caller)
        .await?
        .into_iter()
        .map(view)
        .collect();
    Ok(Json(SubscriptionList {
        count: subscriptions.len(),
        subscriptions,
    }))
}

/// `GET /events/api/v1/subscriptions/{id}`
#[utoipa::path(
    get,
    operation_id = "getSubscription",
    path = "/events/api/v1/subscriptions/{id}",
    tag = crate::openapi::SUBSCRIPTIONS,
    params(SubscriptionId),
    responses(
        (status = 200, description = "The subscription", body = Subscription),
        BadRequest, NotFound, Refusals
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> Result<Json<Subscription>, ApiError> {
    Ok(Json(view(state.subscriptions.get(&caller, id).await?)))
}

/// `PATCH /events/api/v1/subscriptions/{id}`
#[utoipa::path(
    patch,
    operation_id = "updateSubscription",
    path = "/events/api/v1/subscriptions/{id}",
    tag = crate::openapi::SUBSCRIPTIONS,
    description = "Change a subscription's endpoint and/or secret. A new endpoint is checked as on \
        creation and validated with a handshake before any delivery goes to it (deliveries wait \
        meanwhile; none is dropped). A new secret signs at once; the one it replaces keeps signing \
        beside it (two v1 signatures) for the server's --secret-rotation-overlap. Filters and \
        batching cannot be changed (400): create a new subscription.",
    params(SubscriptionId),
    request_body(content = SubscriptionPatch, example = json!({"endPoint": "https://hooks.example.com/new", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})),
    responses(
        (status = 200, description = "Changed", body = Subscription),
        BadRequest, TooLarge, NotFound, Refusals, StorageFull
    ),
    security(("bearer" = []))
)]
pub async fn change(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Subscription>, ApiError> {
    state.subscriptions.may_subscribe(&caller)?;
    let fields: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("the body must be a JSON object: {e}")))?;
    if let Some(field) = IMMUTABLE_FIELDS.iter().find(|f| fields.contains_key(**f)) {
        return Err(ApiError::BadRequest(format!(
            "{field} cannot be changed: a subscription keeps the filters and batching it was \
             created with; create a new subscription (and delete this one) instead."
        )));
    }
    let patch: SubscriptionPatch =
        crate::body::from_value(serde_json::Value::Object(fields), "a subscription change")?;
    let base = params::base_url(state.public_url.as_deref(), &headers);
    let changed = state
        .subscriptions
        .change(&caller, id, patch, &base)
        .await?;
    Ok(Json(view(changed)))
}

/// `DELETE /events/api/v1/subscriptions/{id}`
#[utoipa::path(
    delete,
    operation_id = "deleteSubscription",
    path = "/events/api/v1/subscriptions/{id}",
    tag = crate::openapi::SUBSCRIPTIONS,
    params(SubscriptionId),
    responses(
        (status = 200, description = "Deleted; pending deliveries are dropped", body = Subscription),
        BadRequest, NotFound, Refusals
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> Result<Json<Subscription>, ApiError> {
    Ok(Json(view(state.subscriptions.delete(&caller, id).await?)))
}

#[derive(Debug, Deserialize)]
pub struct DeliveriesQuery {
    state: Option<String>,
}

/// `GET /events/api/v1/subscriptions/{id}/deliveries[?state=pending|delivered|dead]`
#[utoipa::path(
    get,
    operation_id = "listDeliveries",
    path = "/events/api/v1/subscriptions/{id}/deliveries",
    tag = crate::openapi::SUBSCRIPTIONS,
    params(
        SubscriptionId,
        DeliveryStateFilter
    ),
    responses(
        (status = 200, description = "Recent deliveries, newest first, with every attempt", body = DeliveryList),
        BadRequest, NotFound, Refusals
    ),
    security(("bearer" = []))
)]
pub async fn deliveries(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    Query(query): Query<DeliveriesQuery>,
) -> Result<Json<DeliveryList>, ApiError> {
    let deliveries: Vec<Delivery> = state
        .subscriptions
        .deliveries(&caller, id, query.state.as_deref())
        .await?
        .into_iter()
        .map(delivery_view)
        .collect();
    Ok(Json(DeliveryList {
        count: deliveries.len(),
        deliveries,
    }))
}

/// `POST /events/api/v1/subscriptions/{id}/redrive`: dead letters back into the queue.
#[utoipa::path(
    post,
    operation_id = "redriveSubscription",
    path = "/events/api/v1/subscriptions/{id}/redrive",
    tag = crate::openapi::SUBSCRIPTIONS,
    params(SubscriptionId),
    responses(
        (status = 200, description = "Dead letters put back in the queue", body = Redriven, example = json!({"requeued": 2})),
        BadRequest, NotFound, Refusals, StorageFull
    ),
    security(("bearer" = []))
)]
pub async fn redrive(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> Result<Json<Redriven>, ApiError> {
    let requeued = state.subscriptions.redrive(&caller, id).await?;
    Ok(Json(Redriven { requeued }))
}

/// `POST /events/api/v1/subscriptions/{id}/replay`: stored events of a window queued again.
#[utoipa::path(
    post,
    operation_id = "replaySubscription",
    path = "/events/api/v1/subscriptions/{id}/replay",
    tag = crate::openapi::SUBSCRIPTIONS,
    description = "Queue again, in log order, every stored event of the window that the subscription \
        matches and its owner may read now, as new deliveries (the same CloudEvent, a new \
        webhook-id, and a hendelse-replay-id header). With an Idempotency-Key, a repeat of the \
        request queues nothing more and answers what the first did. A window with more events \
        than the server's --replay-max-events is refused whole (400), naming where to cut it.",
    params(
        ("id" = i64, Path, description = "Subscription id"),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 printable ASCII characters; the same key again is the same replay")
    ),
    request_body(content = ReplayRequest, example = json!({"from": "2026-12-01T00:00:00Z", "to": "2026-12-01T06:00:00Z"})),
    responses(
        (status = 202, description = "Queued (or, for a repeated key, queued before)", body = Replayed, example = json!({"replayId": 3, "queued": 120, "repeated": false})),
        BadRequest, TooLarge, NotFound, KeyReused, Refusals, StorageFull
    ),
    security(("bearer" = []))
)]
pub async fn replay(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Replayed>), ApiError> {
    state.subscriptions.may_subscribe(&caller)?;
    let request: ReplayRequest = crate::body::json(&body, "a replay, with from or after (and to)")?;
    let key = match headers.get(IDEMPOTENCY_KEY) {
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::BadRequest("Idempotency-Key must be printable ASCII.".into())
        })?),
        None => None,
    };
    let replayed = state
        .subscriptions
        .replay(&caller, id, request, key)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(replayed)))
}

/// The request header that makes a replay idempotent.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// `POST /events/api/v1/subscriptions/{id}/enable`: takes deliveries again after a disable.
#[utoipa::path(
    post,
    operation_id = "enableSubscription",
    path = "/events/api/v1/subscriptions/{id}/enable",
    tag = crate::openapi::SUBSCRIPTIONS,
    description = "Enable a subscription that was disabled (its endpoint failed for longer than \
        the server's --disable-failing-after, or answered 410 Gone): its health starts afresh and \
        its queued deliveries go out again, those that rested at once. Events published while it \
        was disabled were not queued; replay them. Enabling an enabled subscription changes \
        nothing.",
    params(SubscriptionId),
    responses(
        (status = 200, description = "Enabled", body = Subscription),
        BadRequest, NotFound, Refusals, StorageFull
    ),
    security(("bearer" = []))
)]
pub async fn enable(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> Result<Json<Subscription>, ApiError> {
    Ok(Json(view(state.subscriptions.enable(&caller, id).await?)))
}
