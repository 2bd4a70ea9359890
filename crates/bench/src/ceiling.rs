//! The ceiling: a bare axum endpoint that accepts the same requests as the publish route, parses
//! the body as JSON and answers 200 with the event's id, storing nothing. It runs as a child
//! process of the bench binary (`hendelse-bench __ceiling-server`) with the same runtime set-up as
//! `hendelse serve`, so the two are measured under the same conditions.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// The first argument that makes this binary the ceiling server.
pub const CHILD_ARG: &str = "__ceiling-server";

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let listen = match args {
        [flag, address] if flag == "--listen" => address.clone(),
        _ => "127.0.0.1:0".to_owned(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        println!("listening on http://{}", listener.local_addr()?);
        let app = Router::new().fallback(accept);
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                if let Ok(mut term) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                {
                    term.recv().await;
                }
            })
            .await?;
        Ok(())
    })
}

async fn accept(body: Bytes) -> Response {
    match serde_json::from_slice::<Value>(&body) {
        Ok(event) => Json(event.get("id").cloned().unwrap_or(Value::Null)).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}
