//! The dialog service's settings and its forwarder's start: Dialogporten's events go into this
//! node's event store, or to a remote Events API when one is configured.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use hendelse_dialog::{ForwarderConfig, Sink};
use hendelse_store::{DialogStore, Ingest};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

#[derive(Args, Clone)]
pub struct DialogArgs {
    /// Base of the `source` of the dialog service's events: `{base}/api/v1/enduser/dialogs/{id}`.
    #[arg(
        long,
        env = "HENDELSE_DIALOG_SOURCE_BASE",
        default_value = hendelse_dialog::events::DEFAULT_SOURCE_BASE
    )]
    pub dialog_source_base: String,
    /// Publish the dialog service's events to this Events API (its base URL; they are POSTed to
    /// `{URL}/events/api/v1/events`) instead of into this node's store.
    #[arg(
        long,
        env = "HENDELSE_DIALOG_EVENTS_URL",
        requires = "dialog_events_token"
    )]
    pub dialog_events_url: Option<String>,
    /// Bearer token for --dialog-events-url (an org token that may publish the events).
    #[arg(
        long,
        env = "HENDELSE_DIALOG_EVENTS_TOKEN",
        requires = "dialog_events_url",
        hide_env_values = true
    )]
    pub dialog_events_token: Option<String>,
    /// This node does not forward the dialog outbox (other nodes do); changes still write it.
    #[arg(long, env = "HENDELSE_NO_DIALOG_FORWARDER")]
    pub no_dialog_forwarder: bool,
}

impl DialogArgs {
    /// Starts the forwarder of the dialog outbox, unless this node runs none.
    /// `{base}` of the events' `source`, without a trailing slash.
    fn source_base(&self) -> &str {
        self.dialog_source_base.trim().trim_end_matches('/')
    }

    /// The dialog settings' own checks, made before the store is opened.
    pub fn validate(&self) -> anyhow::Result<()> {
        crate::cli::absolute_http_url("--dialog-source-base", self.source_base())?;
        if let Some(url) = &self.dialog_events_url {
            crate::cli::absolute_http_url("--dialog-events-url", url)?;
        }
        Ok(())
    }

    pub fn start_forwarder(
        &self,
        store: Arc<dyn DialogStore>,
        ingest: Ingest,
        wake: Arc<Notify>,
    ) -> anyhow::Result<Option<JoinHandle<()>>> {
        if self.no_dialog_forwarder {
            tracing::info!("--no-dialog-forwarder: other nodes publish the dialog events");
            return Ok(None);
        }
        let sink = match (&self.dialog_events_url, &self.dialog_events_token) {
            (Some(url), Some(token)) => {
                let parsed = crate::cli::absolute_http_url("--dialog-events-url", url)?;
                tracing::info!(
                    host = parsed.host_str().unwrap_or_default(),
                    "dialog events go to a remote Events API"
                );
                Sink::remote(url.trim(), token.trim(), Duration::from_secs(30))
                    .context("preparing the client of --dialog-events-url")?
            }
            _ => Sink::InProcess(ingest),
        };
        let config = ForwarderConfig {
            source_base: self.source_base().to_owned(),
            ..ForwarderConfig::default()
        };
        Ok(Some(hendelse_dialog::forwarder::start(
            store, sink, config, wake,
        )))
    }
}
