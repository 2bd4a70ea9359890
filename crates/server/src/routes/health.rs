use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::problem::ApiError;

/// Liveness: the process answers.
#[utoipa::path(
    get,
    operation_id = "liveness",
    path = "/health/live",
    tag = crate::openapi::OPERATIONS,
    responses((status = 200, description = "The process answers", body = serde_json::Value))
)]
pub async fn live() -> Json<Value> {
    Json(json!({"status": "live"}))
}

/// `/health`: readiness under its short name.
#[utoipa::path(
    get,
    operation_id = "health",
    path = "/health",
    tag = crate::openapi::OPERATIONS,
    responses(
        (status = 200, description = "The store answers and takes writes", body = serde_json::Value),
        (status = 503, description = "The store does not answer, or cannot write (a full disk)", body = crate::problem::Problem, content_type = "application/problem+json")
    )
)]
pub async fn health(state: State<AppState>) -> Result<Json<Value>, ApiError> {
    ready(state).await
}

/// Readiness: the store answers too.
#[utoipa::path(
    get,
    operation_id = "readiness",
    path = "/health/ready",
    tag = crate::openapi::OPERATIONS,
    responses(
        (status = 200, description = "The store answers and takes writes", body = serde_json::Value),
        (status = 503, description = "The store does not answer, or cannot write (a full disk)", body = crate::problem::Problem, content_type = "application/problem+json")
    )
)]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::Unavailable {
            message: "the event store does not answer".into(),
            retry_after: 1,
        }
    })?;
    // Reads still work when writes do not; readiness says so, as the issue of a full disk is one
    // an operator must act on (publishes get 507 meanwhile).
    if let Some(fault) = state.ingest.health().fault() {
        let cause = if fault.full {
            "the disk is full"
        } else {
            "its last commit failed"
        };
        return Err(ApiError::Unavailable {
            message: format!(
                "the event store cannot write: {cause}; queries still work, publishes are refused"
            ),
            retry_after: 5,
        });
    }
    Ok(Json(json!({"status": "ready"})))
}
