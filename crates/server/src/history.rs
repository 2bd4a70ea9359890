//! The background sweep that keeps the delivery history bounded: delivered deliveries after
//! `--delivered-retention`, dead letters after `--dead-letter-retention`, each in batches of
//! their own transaction (the store's writer is never held for long), and the history's size as
//! metrics after each sweep (counting it on every scrape would cost more than the scrape).

use std::sync::Arc;
use std::time::Duration;

use hendelse_store::PushStore;
use hendelse_store::push::DeliveryState;
use metrics::{counter, gauge};

/// Deliveries one transaction of the sweep deletes at the most.
const BATCH: u32 = 1000;

#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub delivered: Duration,
    pub dead: Duration,
    pub interval: Duration,
}

pub async fn sweep(push: Arc<dyn PushStore>, retention: Retention) {
    let mut tick = tokio::time::interval(retention.interval);
    loop {
        tick.tick().await;
        for (state, keep, label) in [
            (DeliveryState::Delivered, retention.delivered, "delivered"),
            (DeliveryState::Dead, retention.dead, "dead"),
        ] {
            let keep = chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
            let Some(before) = chrono::Utc::now().checked_sub_signed(keep) else {
                continue;
            };
            let mut pruned = 0u64;
            loop {
                match push.prune_settled(state, before, BATCH).await {
                    Ok(n) => {
                        pruned += n;
                        if n < u64::from(BATCH) {
                            break;
                        }
                        // Let the writer serve publishes between batches.
                        tokio::task::yield_now().await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, state = label, "pruning the delivery history failed; will try again");
                        break;
                    }
                }
            }
            if pruned > 0 {
                counter!("hendelse_deliveries_pruned_total", "state" => label).increment(pruned);
                tracing::info!(pruned, state = label, %before, "delivery history pruned");
            }
        }
        match push.history_size().await {
            Ok(size) => {
                gauge!("hendelse_delivery_history", "state" => "delivered")
                    .set(size.delivered as f64);
                gauge!("hendelse_delivery_history", "state" => "dead").set(size.dead as f64);
                gauge!("hendelse_delivery_attempts_stored").set(size.attempts as f64);
            }
            Err(e) => tracing::warn!(error = %e, "cannot measure the delivery history"),
        }
    }
}
