//! The dispatcher follows the event log from a persisted position and turns every match of an
//! event with a live subscription into a durable delivery, moving the position in the same
//! transaction. Positions become visible in commit order (the store's cursor guarantee), so
//! following them skips nothing; several nodes' dispatchers take turns on the position.

use std::sync::Arc;
use std::time::Duration;

use hendelse_auth::{Authorizer, Principal};
use hendelse_model::Visibility;
use hendelse_store::push::{NewDelivery, Subscription};
use hendelse_store::{EventQuery, EventStore, PushStore, StoreError};
use tokio::sync::{Notify, watch};

use crate::filter::{EventAttributes, Matcher};

/// Events matched per transaction.
const BATCH: u32 = 500;

pub async fn run(
    events: Arc<dyn EventStore>,
    push: Arc<dyn PushStore>,
    authorizer: Arc<dyn Authorizer>,
    mut committed: watch::Receiver<i64>,
    wake: Arc<Notify>,
    poll: Duration,
) {
    loop {
        match step(events.as_ref(), push.as_ref(), authorizer.as_ref()).await {
            Ok(Some(enqueued)) => {
                if enqueued > 0 {
                    wake.notify_one();
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "dispatcher: the store failed; will try again"),
        }
        tokio::select! {
            changed = committed.changed() => {
                if changed.is_err() {
                    // Nobody reports commits any more (shutting down): poll only.
                    tokio::time::sleep(poll).await;
                }
            }
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// A subscription ready for matching.
struct Target {
    subscription: Subscription,
    matcher: Matcher,
    visibility: Visibility,
}

/// Matches the next page of the log; `None` when there was nothing new, otherwise how many
/// deliveries were queued (0 also when another dispatcher took the page first).
pub async fn step(
    events: &dyn EventStore,
    push: &dyn PushStore,
    authorizer: &dyn Authorizer,
) -> Result<Option<usize>, StoreError> {
    let from = push.dispatch_position().await?;
    let page = events
        .query(&EventQuery {
            after: from,
            limit: BATCH,
            ..EventQuery::default()
        })
        .await?;
    let Some(last) = page.last().map(|e| e.seq) else {
        return Ok(None);
    };
    let targets: Vec<Target> = push
        .live_subscriptions()
        .await?
        .into_iter()
        .filter_map(|subscription| {
            let principal: Principal = serde_json::from_str(&subscription.spec.principal)
                .inspect_err(|e| {
                    tracing::error!(subscription = subscription.id, error = %e, "unreadable subscriber")
                })
                .ok()?;
            Some(Target {
                matcher: Matcher::new(&subscription.spec, authorizer),
                visibility: authorizer.visibility(&principal),
                subscription,
            })
        })
        .collect();
    let mut deliveries = Vec::new();
    for event in &page {
        let Some(attributes) = EventAttributes::parse(&event.body) else {
            continue;
        };
        let subject = attributes.subject_key();
        for target in &targets {
            if event.seq > target.subscription.start_seq
                && target.matcher.matches(&attributes)
                && target
                    .visibility
                    .covers(subject.as_deref(), attributes.resource.as_deref())
            {
                deliveries.push(NewDelivery {
                    subscription_id: target.subscription.id,
                    event_seq: Some(event.seq),
                    event_id: event.id.clone(),
                    webhook_id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
                    body: event.body.clone(),
                });
            }
        }
    }
    let queued = deliveries.len();
    let moved = push.enqueue(from, last, &deliveries).await?;
    if moved {
        metrics::counter!("hendelse_deliveries_queued_total").increment(queued as u64);
    }
    Ok(Some(if moved { queued } else { 0 }))
}
