use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::problem::ApiError;

/// Liveness: the process answers.
pub async fn live() -> Json<Value> {
    Json(json!({"status": "live"}))
}

/// Readiness: the store answers too.
pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::Unavailable {
            message: "the event store does not answer".into(),
            retry_after: 1,
        }
    })?;
    Ok(Json(json!({"status": "ready"})))
}
