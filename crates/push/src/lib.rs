//! Webhook push: which events a subscription gets ([`filter`]), the dispatcher that turns the log
//! into durable deliveries ([`dispatcher`]), the workers that send them ([`worker`]) with retries
//! ([`schedule`]) and Standard Webhooks signatures ([`signing`]), the guard that keeps
//! webhooks off private networks ([`endpoint`]), and the rules of subscriptions as their owners
//! manage them ([`subscriptions`]), with replays of stored events ([`replay`]).

pub mod dispatcher;
pub mod endpoint;
pub mod filter;
pub mod health;
pub mod replay;
pub mod schedule;
pub mod secrets;
pub mod signing;
pub mod spans;
pub mod subscriptions;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use hendelse_auth::Authorizer;
use hendelse_store::{EventStore, PushStore};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

pub use endpoint::EndpointPolicy;
pub use schedule::RetrySchedule;
pub use subscriptions::{SubscriptionError, SubscriptionService, SubscriptionSettings};

/// The CloudEvent type of the validation handshake.
pub const VALIDATION_EVENT_TYPE: &str = "platform.events.validatesubscription";

#[derive(Debug, Clone)]
pub struct PushConfig {
    pub schedule: RetrySchedule,
    pub timeout: Duration,
    /// Deliveries in flight at once on this node.
    pub concurrency: usize,
    /// Deliveries of one subscription in flight at once on this node (at most `concurrency`), so
    /// that one slow or hanging endpoint holds only so many of the slots.
    pub per_subscription: usize,
    pub policy: EndpointPolicy,
    /// How often the dispatcher and the workers look for work nobody told them about (other
    /// nodes' events, retries coming due).
    pub poll_interval: Duration,
    /// A subscription whose endpoint has failed (without a success) for this long is disabled.
    pub disable_after: Duration,
    /// Whether and how each attempt makes a span of a trace.
    pub spans: Arc<dyn spans::AttemptSpans>,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            schedule: RetrySchedule::default(),
            timeout: Duration::from_secs(30),
            concurrency: 32,
            per_subscription: 8,
            policy: EndpointPolicy::default(),
            poll_interval: Duration::from_millis(250),
            disable_after: health::DEFAULT_DISABLE_AFTER,
            spans: Arc::new(spans::PassThrough),
        }
    }
}

/// The running dispatcher and delivery workers of one node.
pub struct Push {
    dispatcher: JoinHandle<()>,
    worker: JoinHandle<()>,
    shutdown: watch::Sender<bool>,
    /// Wakes the workers (new deliveries, a redrive, a new subscription).
    pub wake: Arc<Notify>,
}

impl Push {
    /// Starts both loops; `committed` follows this node's commits so that the dispatcher reacts
    /// at once to local publishes.
    pub fn start(
        events: Arc<dyn EventStore>,
        push: Arc<dyn PushStore>,
        authorizer: Arc<dyn Authorizer>,
        committed: watch::Receiver<i64>,
        config: PushConfig,
        secret_keys: Arc<secrets::SecretKeys>,
    ) -> Result<Push, reqwest::Error> {
        let wake = Arc::new(Notify::new());
        let (shutdown, stopping) = watch::channel(false);
        let client = worker::client(&config)?;
        let dispatcher = tokio::spawn(dispatcher::run(
            events.clone(),
            push.clone(),
            authorizer.clone(),
            committed,
            wake.clone(),
            dispatcher::DispatchSettings {
                poll: config.poll_interval,
                traced: config.spans.enabled(),
            },
            stopping.clone(),
        ));
        let worker = tokio::spawn(worker::run(
            worker::WorkerParts {
                events,
                push,
                authorizer,
                secret_keys,
            },
            client,
            config,
            wake.clone(),
            stopping,
        ));
        Ok(Push {
            dispatcher,
            worker,
            shutdown,
            wake,
        })
    }

    /// Stops dispatching, lets deliveries in flight finish (for up to the request timeout, at most
    /// 10 s) and hands back the leases of the rest, so that they are sent again at once elsewhere.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        // The dispatcher finishes its step and stores the position it reached in memory.
        let dispatcher = self.dispatcher.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), self.dispatcher)
            .await
            .is_err()
        {
            dispatcher.abort();
            tracing::warn!(
                "the dispatcher did not stop in time; it matches again from the last position stored"
            );
        }
        if let Err(e) = self.worker.await {
            tracing::warn!(error = %e, "the delivery worker ended badly");
        }
    }
}
