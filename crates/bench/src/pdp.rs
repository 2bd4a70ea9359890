//! A decision point for the benchmark (`--pdp`): it permits everything (echoing each resource's
//! `IncludeInResult` attributes, as a PDP does) and counts the requests and the decisions asked,
//! so that the cost of an external PDP, cached or not, shows beside the built-in registry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

#[derive(Default)]
pub struct Counts {
    pub requests: AtomicU64,
    pub decisions: AtomicU64,
}

/// The running PDP: its URL and what it was asked.
pub struct Pdp {
    pub url: String,
    pub counts: Arc<Counts>,
}

async fn decide(State(counts): State<Arc<Counts>>, body: String) -> axum::Json<Value> {
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let resources = request["Request"]["Resource"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    counts.requests.fetch_add(1, Ordering::Relaxed);
    counts
        .decisions
        .fetch_add(resources.len() as u64, Ordering::Relaxed);
    let results: Vec<Value> = resources
        .iter()
        .map(|resource| {
            let echoed: Vec<Value> = resource["Attribute"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["IncludeInResult"] == true)
                .cloned()
                .collect();
            json!({"Decision": "Permit", "Category": [{"Attribute": echoed}]})
        })
        .collect();
    axum::Json(json!({ "Response": results }))
}

pub async fn start() -> anyhow::Result<Pdp> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!(
        "http://{}/authorization/api/v1/decision",
        listener.local_addr()?
    );
    let counts = Arc::new(Counts::default());
    let app = Router::new()
        .route("/authorization/api/v1/decision", post(decide))
        .with_state(counts.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Pdp { url, counts })
}
