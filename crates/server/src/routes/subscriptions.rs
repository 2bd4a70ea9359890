//! Webhook subscriptions, in Altinn's shapes: create (with the validation handshake), list, read
//! and delete one's own, and the deliveries of one with redrive of its dead letters.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{SecondsFormat, Utc};
use hendelse_auth::{Principal, SCOPE_SUBSCRIBE};
use hendelse_model::RESOURCE_PREFIX;
use hendelse_model::subject::party_key;
use hendelse_push::VALIDATION_EVENT_TYPE;
use hendelse_push::signing::Secret;
use hendelse_store::push::{
    DeliveryState, DeliveryView, NewDelivery, NewSubscription, Subscription,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::caller::Caller;
use crate::params;
use crate::problem::ApiError;

const BASE: &str = "/events/api/v1/subscriptions";
const MAX_DELIVERIES: u32 = 1000;

/// A new subscription; see the README's "Webhooks" for the rules.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateRequest {
    end_point: Option<String>,
    resource_filter: Option<String>,
    source_filter: Option<String>,
    subject_filter: Option<String>,
    alternative_subject_filter: Option<String>,
    type_filter: Option<String>,
    #[serde(default)]
    include_subunits: bool,
    secret: Option<String>,
}

/// A subscription as the API shows it; the secret never leaves the store.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionBody {
    id: i64,
    end_point: String,
    resource_filter: String,
    source_filter: Option<String>,
    subject_filter: Option<String>,
    alternative_subject_filter: Option<String>,
    type_filter: Option<String>,
    include_subunits: bool,
    consumer: String,
    created_by: String,
    created: String,
    validated: bool,
    enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_reason: Option<String>,
    has_secret: bool,
}

impl From<Subscription> for SubscriptionBody {
    fn from(s: Subscription) -> Self {
        SubscriptionBody {
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
        }
    }
}

fn require_subscribe_scope(caller: &Principal) -> Result<(), ApiError> {
    if caller.has_scope(SCOPE_SUBSCRIBE) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "the token lacks the scope {SCOPE_SUBSCRIBE}"
        )))
    }
}

/// Who owns the subscriptions a principal creates, in Altinn's notation.
fn consumer_of(caller: &Principal) -> String {
    match caller {
        Principal::Org { org: Some(org), .. } => format!("/org/{org}"),
        Principal::Org {
            org_number: Some(orgno),
            ..
        } => format!("/organisation/{orgno}"),
        Principal::Org { .. } => "/org/unknown".to_owned(),
        Principal::Person {
            user_id: Some(id), ..
        } => format!("/user/{id}"),
        Principal::Person { pid, .. } => format!("/person/{pid}"),
    }
}

/// An empty text counts as absent.
fn given(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// `urn:altinn:resource:app_{org}_{app}` from an app source filter
/// (`https://{org}.apps.{host}/{org}/{app}…`).
fn app_resource_of(source_filter: &str) -> Option<String> {
    let rest = source_filter.strip_prefix("https://")?;
    let (host, path) = rest.split_once('/')?;
    let (host_org, domain) = host.split_once('.')?;
    let mut segments = path.split('/');
    let org = segments.next()?;
    let app = segments.next()?;
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (host_org == org && domain.starts_with("apps.") && plain(org) && plain(app))
        .then(|| format!("{RESOURCE_PREFIX}app_{org}_{app}"))
}

/// `POST /events/api/v1/subscriptions`
#[utoipa::path(
    post,
    path = "/events/api/v1/subscriptions",
    tag = crate::openapi::SUBSCRIPTIONS,
    description = "Create a webhook subscription; a validation event is posted to the endpoint first.",
    request_body = CreateRequest,
    responses(
        (status = 201, description = "Created", body = SubscriptionBody, headers(("Location" = String))),
        (status = 400, description = "Invalid parameters or event (see detail and errors)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the scope or right", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the store is unreachable; nothing was stored (see Retry-After)", body = crate::problem::Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_subscribe_scope(&caller)?;
    let request: CreateRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!("the body must be a subscription as JSON: {e}"))
    })?;
    let end_point = given(request.end_point).ok_or_else(|| {
        ApiError::BadRequest("Missing or invalid endpoint to push events towards.".into())
    })?;
    hendelse_push::endpoint::check(&end_point, state.endpoint_policy)
        .await
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let source_filter = given(request.source_filter);
    let resource_filter = given(request.resource_filter)
        .or_else(|| source_filter.as_deref().and_then(app_resource_of))
        .ok_or_else(|| {
            ApiError::BadRequest(
                "A resourceFilter is required (or a sourceFilter naming an app).".into(),
            )
        })?;
    if !resource_filter.starts_with(RESOURCE_PREFIX) {
        return Err(ApiError::BadRequest(format!(
            "resourceFilter must start with '{RESOURCE_PREFIX}'."
        )));
    }
    let subject_filter = given(request.subject_filter);
    let owner = state.authorizer.owns(&caller, &resource_filter);
    match &subject_filter {
        None if !owner => {
            return Err(ApiError::BadRequest(
                "A subjectFilter is required when the subscriber does not own the resource.".into(),
            ));
        }
        Some(subject)
            if !owner
                && !state
                    .authorizer
                    .visibility(&caller)
                    .covers(Some(&party_key(subject)), Some(&resource_filter)) =>
        {
            return Err(ApiError::Forbidden(format!(
                "the subscriber may not read events of {resource_filter} about {subject}"
            )));
        }
        _ => {}
    }
    let secret = given(request.secret);
    if let Some(secret) = &secret {
        Secret::parse(secret).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    }
    let consumer = consumer_of(&caller);
    let principal = serde_json::to_string(&caller)
        .map_err(|e| ApiError::internal("cannot record the subscriber", e))?;
    let spec = NewSubscription {
        end_point,
        resource_filter,
        source_filter,
        subject_filter,
        alternative_subject_filter: given(request.alternative_subject_filter),
        type_filter: given(request.type_filter),
        include_subunits: request.include_subunits,
        created_by: consumer.clone(),
        consumer,
        principal,
        secret,
    };
    let base = params::base_url(state.public_url.as_deref(), &headers);
    let handshake = move |id: i64| {
        let event_id = uuid::Uuid::new_v4().to_string();
        let body = json!({
            "specversion": "1.0",
            "id": event_id,
            "type": VALIDATION_EVENT_TYPE,
            "source": format!("{base}{BASE}/{id}"),
            "time": Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
        })
        .to_string();
        NewDelivery {
            subscription_id: id,
            event_seq: None,
            webhook_id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
            event_id,
            body,
        }
    };
    let created = state.push.create_subscription(&spec, &handshake).await?;
    state.wake_workers();
    tracing::info!(subscription = created.id, consumer = %created.spec.consumer, "subscription created");
    let location = HeaderValue::from_str(&format!("{BASE}/{}", created.id))
        .map_err(|e| ApiError::internal("the Location is not a header value", e))?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(SubscriptionBody::from(created)),
    )
        .into_response())
}

/// `GET /events/api/v1/subscriptions`
#[utoipa::path(
    get,
    path = "/events/api/v1/subscriptions",
    tag = crate::openapi::SUBSCRIPTIONS,
    responses(
        (status = 200, description = "The caller's subscriptions", body = SubscriptionList),
        (status = 401, description = "No valid bearer token", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the scope or right", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the store is unreachable; nothing was stored (see Retry-After)", body = crate::problem::Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<SubscriptionList>, ApiError> {
    require_subscribe_scope(&caller)?;
    let subscriptions: Vec<SubscriptionBody> = state
        .push
        .subscriptions_of(&consumer_of(&caller))
        .await?
        .into_iter()
        .map(SubscriptionBody::from)
        .collect();
    Ok(Json(SubscriptionList {
        count: subscriptions.len(),
        subscriptions,
    }))
}

/// The caller's own subscription `id`; someone else's is as absent as a missing one.
async fn own(state: &AppState, caller: &Principal, id: i64) -> Result<Subscription, ApiError> {
    require_subscribe_scope(caller)?;
    match state.push.subscription(id).await? {
        Some(s) if s.spec.consumer == consumer_of(caller) => Ok(s),
        _ => Err(ApiError::NotFound(format!("there is no subscription {id}"))),
    }
}

/// `GET /events/api/v1/subscriptions/{id}`
#[utoipa::path(
    get,
    path = "/events/api/v1/subscriptions/{id}",
    tag = crate::openapi::SUBSCRIPTIONS,
    params(
        ("id" = i64, Path, description = "Subscription id")
    ),
    responses(
        (status = 200, description = "The subscription", body = SubscriptionBody),
        (status = 401, description = "No valid bearer token", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the scope or right", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription of the caller", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the store is unreachable; nothing was stored (see Retry-After)", body = crate::problem::Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> Result<Json<SubscriptionBody>, ApiError> {
    Ok(Json(own(&state, &caller, id).await?.into()))
}

/// `DELETE /events/api/v1/subscriptions/{id}`
#[utoipa::path(
    delete,
    path = "/events/api/v1/subscriptions/{id}",
    tag = crate::openapi::SUBSCRIPTIONS,
    params(
        ("id" = i64, Path, description = "Subscription id")
    ),
    responses(
        (status = 200, description = "Deleted; pending deliveries are dropped", body = SubscriptionBody),
        (status = 401, description = "No valid bearer token", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the scope or right", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription of the caller", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the store is unreachable; nothing was stored (see Retry-After)", body = crate::problem::Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> Result<Json<SubscriptionBody>, ApiError> {
    let subscription = own(&state, &caller, id).await?;
    if !state.push.delete_subscription(id).await? {
        return Err(ApiError::NotFound(format!("there is no subscription {id}")));
    }
    tracing::info!(subscription = id, "subscription deleted");
    Ok(Json(subscription.into()))
}

#[derive(Debug, Deserialize)]
pub struct DeliveriesQuery {
    state: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryBody {
    id: i64,
    event_id: String,
    webhook_id: String,
    /// pending, delivered or dead
    state: &'static str,
    attempts: i64,
    next_attempt: Option<String>,
    last_status: Option<u16>,
    last_error: Option<String>,
    /// Every attempt: `at`, `status`, `error`.
    history: Vec<serde_json::Value>,
}

/// `{"count", "subscriptions"}`, as Altinn answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionList {
    count: usize,
    subscriptions: Vec<SubscriptionBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    count: usize,
    deliveries: Vec<DeliveryBody>,
}

impl From<DeliveryView> for DeliveryBody {
    fn from(d: DeliveryView) -> Self {
        DeliveryBody {
            id: d.id,
            event_id: d.event_id,
            webhook_id: d.webhook_id,
            state: d.state.as_str(),
            attempts: d.attempts,
            next_attempt: d
                .next_attempt
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
            last_status: d.last_status,
            last_error: d.last_error,
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
}

/// `GET /events/api/v1/subscriptions/{id}/deliveries[?state=pending|delivered|dead]`
#[utoipa::path(
    get,
    path = "/events/api/v1/subscriptions/{id}/deliveries",
    tag = crate::openapi::SUBSCRIPTIONS,
    params(
        ("id" = i64, Path, description = "Subscription id"),
        ("state" = Option<String>, Query, description = "pending, delivered or dead")
    ),
    responses(
        (status = 200, description = "Recent deliveries, newest first, with every attempt", body = DeliveryList),
        (status = 400, description = "Invalid parameters or event (see detail and errors)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the scope or right", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription of the caller", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the store is unreachable; nothing was stored (see Retry-After)", body = crate::problem::Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = []))
)]
pub async fn deliveries(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    Query(query): Query<DeliveriesQuery>,
) -> Result<Json<DeliveryList>, ApiError> {
    own(&state, &caller, id).await?;
    let filter = match query.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => Some(DeliveryState::parse(text).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "state must be pending, delivered or dead (got '{text}')"
            ))
        })?),
    };
    let deliveries: Vec<DeliveryBody> = state
        .push
        .deliveries(id, filter, MAX_DELIVERIES)
        .await?
        .into_iter()
        .map(DeliveryBody::from)
        .collect();
    Ok(Json(DeliveryList {
        count: deliveries.len(),
        deliveries,
    }))
}

/// `POST /events/api/v1/subscriptions/{id}/redrive`: dead letters back into the queue.
#[utoipa::path(
    post,
    path = "/events/api/v1/subscriptions/{id}/redrive",
    tag = crate::openapi::SUBSCRIPTIONS,
    params(
        ("id" = i64, Path, description = "Subscription id")
    ),
    responses(
        (status = 200, description = "Dead letters put back in the queue", body = serde_json::Value, example = json!({"requeued": 2})),
        (status = 401, description = "No valid bearer token", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the scope or right", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription of the caller", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the store is unreachable; nothing was stored (see Retry-After)", body = crate::problem::Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = []))
)]
pub async fn redrive(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    own(&state, &caller, id).await?;
    let requeued = state.push.redrive(id, Utc::now()).await?;
    state.wake_workers();
    tracing::info!(subscription = id, requeued, "dead letters redriven");
    Ok(Json(json!({ "requeued": requeued })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_sources_name_their_resource() {
        assert_eq!(
            app_resource_of("https://ttd.apps.altinn.no/ttd/app-1/instances/%").as_deref(),
            Some("urn:altinn:resource:app_ttd_app-1")
        );
        assert_eq!(app_resource_of("https://ttd.apps.altinn.no/skd/app/"), None);
        assert_eq!(app_resource_of("https://example.com/ttd/app/"), None);
        assert_eq!(app_resource_of("https://ttd.apps.altinn.no/ttd/ap%"), None);
    }
}
