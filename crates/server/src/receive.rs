//! `hendelse receive`: a webhook endpoint on this machine for trying subscriptions out. It answers
//! the validation handshake, prints every event it receives as one JSON line on stdout, and with
//! `--secret` verifies the Standard Webhooks signature (a mismatch is answered 401 and not
//! printed).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use clap::Args;
use hendelse_push::VALIDATION_EVENT_TYPE;
use hendelse_push::signing::Secret;

#[derive(Args, Debug)]
pub struct ReceiveArgs {
    /// Address to listen on; any path is accepted.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// The subscription's secret (`whsec_…`): signatures are checked.
    #[arg(long, env = "HENDELSE_WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
}

pub async fn run(args: ReceiveArgs) -> anyhow::Result<()> {
    let secret = args
        .secret
        .as_deref()
        .map(Secret::parse)
        .transpose()
        .context("--secret")?;
    let app = Router::new()
        .fallback(post(receive))
        .with_state(Arc::new(secret));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!(
        "receiving webhooks on http://{}/ (Ctrl-C to stop)",
        listener.local_addr()?
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

async fn receive(
    State(secret): State<Arc<Option<Secret>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let Ok(text) = std::str::from_utf8(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    if let Some(secret) = secret.as_ref() {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(id), Some(timestamp), Some(signatures)) = (
            header("webhook-id"),
            header("webhook-timestamp").and_then(|t| t.parse::<i64>().ok()),
            header("webhook-signature"),
        ) else {
            eprintln!("refused a request without Standard Webhooks headers");
            return StatusCode::UNAUTHORIZED;
        };
        let expected = secret.sign(id, timestamp, text);
        if !signatures.split(' ').any(|s| s == expected) {
            eprintln!("refused a request whose signature does not match the secret");
            return StatusCode::UNAUTHORIZED;
        }
    }
    let Ok(event) = serde_json::from_str::<serde_json::Value>(text) else {
        return StatusCode::BAD_REQUEST;
    };
    if event["type"] == VALIDATION_EVENT_TYPE {
        eprintln!("answered the validation of {}", event["source"]);
        return StatusCode::OK;
    }
    // A batch (`application/cloudevents-batch+json`) prints as its events, a line each.
    let events = match event {
        serde_json::Value::Array(events) => events,
        event => vec![event],
    };
    let mut out = std::io::stdout().lock();
    let written = events
        .iter()
        .try_for_each(|event| writeln!(out, "{event}"))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => StatusCode::OK,
        // Nowhere to put it: let Hendelse try again later rather than lose it.
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}
