//! The forwarder: turns outbox rows into CloudEvents and publishes them, into this node's event
//! store or to a remote Events API, oldest first. A row leaves the outbox only after its event is
//! stored; a failure is retried with backoff for as long as it takes, so publication is at least
//! once, always with the same event id (the event store keeps one event per source and id).

use std::sync::Arc;
use std::time::Duration;

use hendelse_model::{ValidationError, validate_event};
use hendelse_store::{DialogStore, Ingest, IngestError, NewEvent, StoreError};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::events::cloud_event;

/// Where the events go.
#[derive(Clone)]
pub enum Sink {
    /// This node's event store, through its group-committing writer.
    InProcess(Ingest),
    /// `POST {url}/events/api/v1/events` as `application/cloudevents-batch+json`, with a bearer
    /// token.
    Remote {
        client: reqwest::Client,
        url: String,
        token: String,
    },
}

impl Sink {
    /// A remote Events API at `base_url` (`https://platform.altinn.no` or another Hendelse).
    pub fn remote(base_url: &str, token: &str, timeout: Duration) -> Result<Sink, ForwardError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ForwardError::Http(e.to_string()))?;
        Ok(Sink::Remote {
            client,
            url: format!("{}/events/api/v1/events", base_url.trim_end_matches('/')),
            token: token.to_owned(),
        })
    }

    async fn publish(&self, events: &[String]) -> Result<(), ForwardError> {
        match self {
            Sink::InProcess(ingest) => {
                let mut batch = Vec::with_capacity(events.len());
                for json in events {
                    batch.push(NewEvent::from(validate_event(json)?));
                }
                ingest.publish(batch).await?;
                Ok(())
            }
            Sink::Remote { client, url, token } => {
                let body = format!("[{}]", events.join(","));
                let response = client
                    .post(url)
                    .bearer_auth(token)
                    .header("content-type", "application/cloudevents-batch+json")
                    .body(body)
                    .send()
                    .await
                    // Without the URL: it is the operator's, but errors end up in logs.
                    .map_err(|e| ForwardError::Http(e.without_url().to_string()))?;
                let status = response.status();
                if status.is_success() {
                    return Ok(());
                }
                let text = response.text().await.unwrap_or_default();
                Err(ForwardError::Status {
                    status: status.as_u16(),
                    body: text.chars().take(500).collect(),
                })
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("the outbox cannot be read or cleared: {0}")]
    Store(#[from] StoreError),
    #[error("an outbox row is not a valid event: {0}")]
    Invalid(#[from] ValidationError),
    #[error("an outbox row has unreadable data: {0}")]
    Data(#[from] serde_json::Error),
    #[error("the event store did not take the events: {0}")]
    Ingest(#[from] IngestError),
    #[error("the Events API cannot be reached: {0}")]
    Http(String),
    #[error("the Events API answered {status}: {body}")]
    Status { status: u16, body: String },
}

#[derive(Debug, Clone)]
pub struct ForwarderConfig {
    /// `{base}` of each event's source: `{base}/api/v1/enduser/dialogs/{id}…`.
    pub source_base: String,
    /// Most events in one publish.
    pub batch: u32,
    /// How often the outbox is read without being told of new rows (other nodes' changes).
    pub poll_interval: Duration,
    /// First wait after a failure; it doubles with every failure in a row, up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        ForwarderConfig {
            source_base: crate::events::DEFAULT_SOURCE_BASE.to_owned(),
            batch: 500,
            poll_interval: Duration::from_secs(1),
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// Publishes one batch from the outbox; returns how many events it forwarded (0: it is empty).
pub async fn forward_once(
    store: &dyn DialogStore,
    sink: &Sink,
    config: &ForwarderConfig,
) -> Result<usize, ForwardError> {
    let rows = store.outbox(config.batch.max(1)).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let events = rows
        .iter()
        .map(|row| cloud_event(row, &config.source_base))
        .collect::<Result<Vec<_>, _>>()?;
    sink.publish(&events).await?;
    // Should this fail, the rows are published again later: same ids, stored once.
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    store.outbox_done(&seqs).await?;
    metrics::counter!("hendelse_dialog_events_forwarded_total").increment(rows.len() as u64);
    Ok(rows.len())
}

/// Starts the forwarder; `wake` tells it of new outbox rows. It runs until aborted; rows it had
/// not finished stay in the outbox for the next start.
pub fn start(
    store: Arc<dyn DialogStore>,
    sink: Sink,
    config: ForwarderConfig,
    wake: Arc<Notify>,
) -> JoinHandle<()> {
    tokio::spawn(run(store, sink, config, wake))
}

async fn run(store: Arc<dyn DialogStore>, sink: Sink, config: ForwarderConfig, wake: Arc<Notify>) {
    let mut backoff = config.min_backoff;
    loop {
        match forward_once(store.as_ref(), &sink, &config).await {
            Ok(0) => {
                backoff = config.min_backoff;
                if let Ok((depth, _)) = store.outbox_depth().await {
                    metrics::gauge!("hendelse_dialog_outbox_depth").set(depth as f64);
                }
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(config.poll_interval) => {}
                }
            }
            Ok(_) => backoff = config.min_backoff,
            Err(e) => {
                metrics::counter!("hendelse_dialog_forward_failures_total").increment(1);
                tracing::warn!(error = %e, retry_in = ?backoff, "forwarding dialog events failed; will retry");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(config.max_backoff);
            }
        }
    }
}
