//! Storage of webhook subscriptions and of their durable delivery queue, with the same behaviour
//! on both backends. The SQL is written once (`$n` placeholders work on SQLite too) and
//! instantiated per backend by [`impl_push_store`]; the few spellings that differ come in as
//! arguments.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::StoreError;

/// A subscription as its creator asked for it, already validated and authorized.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSubscription {
    pub end_point: String,
    pub resource_filter: String,
    pub source_filter: Option<String>,
    pub subject_filter: Option<String>,
    pub alternative_subject_filter: Option<String>,
    pub type_filter: Option<String>,
    pub include_subunits: bool,
    pub consumer: String,
    pub created_by: String,
    /// Whom deliveries are authorized as (JSON of the creator's principal).
    pub principal: String,
    pub secret: Option<String>,
    pub batching: Batching,
    /// At most this many deliveries per second, over all nodes.
    pub rate_limit: Option<u32>,
}

/// How a subscription's events are sent: one per request (the default), or up to `max_events`
/// in one request, a batch that is not full yet waiting up to `max_wait_ms` for more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    pub max_events: u32,
    pub max_wait_ms: u32,
}

impl Default for Batching {
    fn default() -> Self {
        Batching {
            max_events: 1,
            max_wait_ms: 0,
        }
    }
}

impl Batching {
    /// Whether the subscription receives batches (`application/cloudevents-batch+json`), even
    /// of one event.
    pub fn batches(self) -> bool {
        self.max_events > 1
    }
}

/// The events of one batch delivery, in log order, and the batching that bounds it.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOf {
    pub seqs: Vec<i64>,
    pub batching: Batching,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub id: i64,
    pub spec: NewSubscription,
    pub created: DateTime<Utc>,
    /// Events after this position are delivered.
    pub start_seq: i64,
    pub validated: bool,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub health: EndpointHealth,
    /// The secret a change replaced, which signs beside the current one until the time given.
    pub previous_secret: Option<(String, DateTime<Utc>)>,
}

/// A live subscription as the dispatcher matches events against it: its filters, its
/// subscriber and how it is sent, no more (the dispatcher holds every one in memory).
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionToMatch {
    pub id: i64,
    /// Events after this position are delivered.
    pub start_seq: i64,
    pub resource_filter: String,
    pub source_filter: Option<String>,
    pub subject_filter: Option<String>,
    pub alternative_subject_filter: Option<String>,
    pub type_filter: Option<String>,
    pub include_subunits: bool,
    /// Whom deliveries are authorized as (JSON of the creator's principal).
    pub principal: String,
    pub batching: Batching,
}

/// One message to send to one subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    pub subscription_id: i64,
    /// The event's position; `None` for the validation handshake.
    pub event_seq: Option<i64>,
    pub event_id: String,
    pub webhook_id: String,
    /// The message, when it is not the stored event (the handshake); an event's delivery reads
    /// the event's body when it is leased instead of keeping a copy.
    pub body: Option<String>,
    /// For a subscription that receives batches: the events of this delivery (`event_seq` and
    /// `event_id` are the first's). It joins the subscription's open batch when that has room.
    pub batch: Option<BatchOf>,
}

/// A delivery a worker holds a lease on.
#[derive(Debug, Clone, PartialEq)]
pub struct LeasedDelivery {
    pub id: i64,
    pub subscription_id: i64,
    pub event_seq: Option<i64>,
    pub event_id: String,
    pub webhook_id: String,
    /// The message: the event as stored, or the handshake; empty when the event is no longer
    /// stored (a subscription that was disabled past the retention of its queued events), and
    /// for a batch, whose events are read with [`PushStore::event_bodies`].
    pub body: String,
    /// A batch's events, in log order.
    pub batch: Option<Vec<i64>>,
    /// Attempts made before this one (since the last redrive).
    pub attempts: i64,
    /// The replay it belongs to; `None` for a live delivery.
    pub replay: Option<i64>,
    /// The W3C `traceparent` its event was published with, if the request carried one.
    pub traceparent: Option<String>,
}

/// Which deliveries a worker asks for.
#[derive(Debug, Clone, Copy)]
pub struct LeaseRequest<'a> {
    pub owner: &'a str,
    pub now: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// Most deliveries in all.
    pub limit: u32,
    /// Most deliveries of one subscription, so that one slow endpoint cannot take every slot.
    pub per_subscription: u32,
    /// Subscriptions the worker has enough of in flight already.
    pub exclude: &'a [i64],
    /// Subscriptions with some in flight, and how many more each may have (less than
    /// `per_subscription`), so that a lease never takes a subscription over its cap.
    pub room: &'a [(i64, u32)],
    /// Whether to look at every subscription's due deliveries (new work, retries coming due,
    /// another node's) or only at those of `room`, which costs what it takes rather than a read
    /// past the queues of the excluded subscriptions.
    pub wide: bool,
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Delivered,
    RetryAt(DateTime<Utc>),
    Dead,
}

impl Next {
    /// The delivery's state after the attempt, and when it is next due (for a retry) or was
    /// settled.
    pub(crate) fn state_and_time(self, at: DateTime<Utc>) -> (&'static str, DateTime<Utc>) {
        match self {
            Next::Delivered => ("delivered", at),
            Next::RetryAt(retry) => ("pending", retry),
            Next::Dead => ("dead", at),
        }
    }
}

/// Records in one statement of `record_attempts`: 6 bound values each, within SQLite's 32,766.
const RECORDS_PER_ROUND: usize = 1000;

/// Splits `records` (by index, in order) into rounds in which no delivery appears twice and that
/// hold at most [`RECORDS_PER_ROUND`].
pub(crate) fn rounds_of_distinct_deliveries(records: &[AttemptRecord]) -> Vec<Vec<usize>> {
    let mut rounds: Vec<(std::collections::HashSet<i64>, Vec<usize>)> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        match rounds
            .iter_mut()
            .find(|(ids, round)| round.len() < RECORDS_PER_ROUND && !ids.contains(&r.delivery_id))
        {
            Some((ids, round)) => {
                ids.insert(r.delivery_id);
                round.push(i);
            }
            None => rounds.push(([r.delivery_id].into(), vec![i])),
        }
    }
    rounds.into_iter().map(|(_, round)| round).collect()
}

/// The outcome of one attempt, recorded with its consequences in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub delivery_id: i64,
    pub subscription_id: i64,
    pub lease_owner: String,
    pub at: DateTime<Utc>,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub next: Next,
    /// A delivered validation handshake validates the subscription.
    pub validates: bool,
    /// Disable the subscription (410 Gone, or failing for too long).
    pub disable: Option<Disable>,
    /// What the attempt says about the endpoint; `None` when nothing was sent.
    pub endpoint: Option<EndpointReport>,
    /// The endpoint the request went to: what the attempt says of it (health, validation, a
    /// disable) applies only while the subscription still points there, not to an endpoint a
    /// PATCH put in its place meanwhile. `None`: whatever it points at.
    pub end_point: Option<String>,
}

/// Why an attempt disables its subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disable {
    pub reason: String,
    /// Only while the streak of failures that began then is still going: a success that another
    /// worker recorded meanwhile (which ends the streak) keeps the subscription enabled. `None`
    /// disables whatever the streak (the endpoint said it is gone).
    pub streak_began: Option<DateTime<Utc>>,
}

/// The delivery history's size: settled deliveries by state, and attempts recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistorySize {
    pub delivered: u64,
    pub dead: u64,
    pub attempts: u64,
}

/// How many subscriptions (not deleted) are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscriptionStates {
    pub healthy: u64,
    pub failing: u64,
    pub disabled: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Delivered,
    Dead,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }

    pub fn parse(text: &str) -> Option<DeliveryState> {
        match text {
            "pending" => Some(DeliveryState::Pending),
            "delivered" => Some(DeliveryState::Delivered),
            "dead" => Some(DeliveryState::Dead),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AttemptView {
    pub at: DateTime<Utc>,
    pub status: Option<u16>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryView {
    pub id: i64,
    pub event_id: String,
    pub webhook_id: String,
    /// How many events it carries (1 but for batches).
    pub event_count: i64,
    pub state: DeliveryState,
    pub attempts: i64,
    pub next_attempt: Option<DateTime<Utc>>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// The replay it belongs to; `None` for a live delivery.
    pub replay: Option<i64>,
    pub history: Vec<AttemptView>,
}

/// Subscriptions and deliveries; both backends implement it with identical behaviour.
#[async_trait]
pub trait PushStore: Send + Sync + 'static {
    /// Stores the subscription, starting at the current end of the log, together with its
    /// validation handshake (built by `handshake` from the new id) in one transaction.
    async fn create_subscription(
        &self,
        subscription: &NewSubscription,
        handshake: &(dyn Fn(i64) -> NewDelivery + Send + Sync),
    ) -> Result<Subscription, StoreError>;

    async fn subscription(&self, id: i64) -> Result<Option<Subscription>, StoreError>;

    /// The subscriptions (not deleted) among `ids`, in id order: one read for a lease's worth.
    async fn subscriptions_with_ids(&self, ids: &[i64]) -> Result<Vec<Subscription>, StoreError>;

    /// The live subscriptions of one consumer, oldest first.
    async fn subscriptions_of(&self, consumer: &str) -> Result<Vec<Subscription>, StoreError>;

    /// Every subscription that is neither deleted nor disabled.
    async fn live_subscriptions(&self) -> Result<Vec<Subscription>, StoreError>;

    /// The same subscriptions as [`live_subscriptions`](Self::live_subscriptions), in id order,
    /// with only what matching needs.
    async fn subscriptions_to_match(&self) -> Result<Vec<SubscriptionToMatch>, StoreError>;

    /// A number that changes (in the same transaction) whenever the set of live subscriptions
    /// does, on any node: what [`live_subscriptions`](Self::live_subscriptions) returned stays
    /// current while this reads the same. Read it before the subscriptions.
    async fn subscription_generation(&self) -> Result<i64, StoreError>;

    /// Deletes the subscription and drops its pending deliveries; false when there was none.
    async fn delete_subscription(&self, id: i64) -> Result<bool, StoreError>;

    /// How far the dispatcher has matched the log.
    async fn dispatch_position(&self) -> Result<i64, StoreError>;

    /// Moves the dispatch position from `from` to `to` and enqueues the deliveries, atomically;
    /// false (and nothing stored) when another dispatcher moved the position first. A delivery of
    /// an event already queued for the subscription is skipped. A batch joins the subscription's
    /// open batch (one not yet attempted, still waiting, with room for all of it) or opens one,
    /// due at once when full and otherwise after its `max_wait_ms`.
    async fn enqueue(
        &self,
        from: i64,
        to: i64,
        deliveries: &[NewDelivery],
    ) -> Result<bool, StoreError>;

    /// The bodies of the stored events `seqs`, in log order; an event no longer stored is left
    /// out.
    async fn event_bodies(&self, seqs: &[i64]) -> Result<Vec<(i64, String)>, StoreError>;

    /// Leases due deliveries of live, validated subscriptions (handshakes need no validation)
    /// until `request.until`; nobody else gets them before the lease expires.
    async fn lease(&self, request: &LeaseRequest<'_>) -> Result<Vec<LeasedDelivery>, StoreError>;

    /// Gives up every lease `owner` holds (a worker shutting down), so others may send them now.
    async fn release(&self, owner: &str) -> Result<u64, StoreError>;

    /// Gives up `owner`'s leases of these deliveries, due no earlier than `not_before` (an
    /// endpoint's rest that began after they were leased); how many it gave up.
    async fn release_until(
        &self,
        owner: &str,
        ids: &[i64],
        not_before: DateTime<Utc>,
    ) -> Result<u64, StoreError>;

    /// Records attempts and their consequences, all in one transaction. A record is ignored
    /// (false in its place) when its `lease_owner` no longer holds the delivery.
    async fn record_attempts(&self, records: &[AttemptRecord]) -> Result<Vec<bool>, StoreError>;

    /// Records one attempt; see [`PushStore::record_attempts`].
    async fn record_attempt(&self, record: &AttemptRecord) -> Result<bool, StoreError> {
        let recorded = self.record_attempts(std::slice::from_ref(record)).await?;
        Ok(recorded.first().copied().unwrap_or(false))
    }

    /// The subscription's deliveries, newest first, with their attempts.
    async fn deliveries(
        &self,
        subscription_id: i64,
        state: Option<DeliveryState>,
        limit: u32,
    ) -> Result<Vec<DeliveryView>, StoreError>;

    /// Puts the subscription's dead letters back in the queue and enables the subscription again
    /// if its failures had disabled it; returns how many were requeued.
    async fn redrive(&self, subscription_id: i64, now: DateTime<Utc>) -> Result<u64, StoreError>;

    /// The replay stored for the subscription under `key`, if any.
    async fn stored_replay(
        &self,
        subscription_id: i64,
        key: &str,
    ) -> Result<Option<StoredReplay>, StoreError>;

    /// Stores the replay and queues its deliveries, due now, in one synced transaction; when its
    /// key is taken, nothing is queued and the outcome says what the key names.
    async fn store_replay(&self, replay: &NewReplay) -> Result<ReplayOutcome, StoreError>;

    /// Moves up to [`health::DEFER_CHUNK`] of the subscription's due deliveries that nobody holds
    /// to the end of its endpoint's rest, in a transaction of its own; how many it moved (fewer
    /// than the chunk: all are moved).
    async fn defer_resting(
        &self,
        subscription_id: i64,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError>;

    /// Applies a change, in one synced transaction; a new endpoint unvalidates the subscription
    /// and queues `handshake` (built from the id). False when there is no such subscription.
    async fn change_subscription(
        &self,
        id: i64,
        change: &SubscriptionChange,
        handshake: &(dyn Fn(i64) -> NewDelivery + Send + Sync),
    ) -> Result<bool, StoreError>;

    /// Claims the next send of a rate-limited subscription, for every node alike (a generic cell
    /// rate algorithm whose state is in the store).
    async fn claim_permit(
        &self,
        subscription_id: i64,
        now: DateTime<Utc>,
    ) -> Result<Permit, StoreError>;

    /// Every subscription's stored secrets (deleted ones' too: they stay in the table).
    async fn stored_secrets(&self) -> Result<Vec<StoredSecrets>, StoreError>;

    /// Writes each pair's second in place of its first, in one synced transaction, where the
    /// stored secrets are still the first (a change made meanwhile, by another node, stands);
    /// how many it replaced.
    async fn replace_secrets(
        &self,
        replaced: &[(StoredSecrets, StoredSecrets)],
    ) -> Result<u64, StoreError>;

    /// Enables the subscription again with a clean health record and its rested deliveries due
    /// now; false when there is none.
    async fn enable_subscription(&self, id: i64) -> Result<bool, StoreError>;

    /// How many subscriptions are healthy, failing and disabled.
    async fn subscription_states(&self) -> Result<SubscriptionStates, StoreError>;

    /// Deletes up to `limit` deliveries in `state` (delivered or dead) settled before
    /// `settled_before`, oldest first, with their attempts; how many it deleted.
    async fn prune_settled(
        &self,
        state: DeliveryState,
        settled_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError>;

    /// How large the delivery history is (counted: for a sweep, not for every scrape).
    async fn history_size(&self) -> Result<HistorySize, StoreError>;

    /// Pending deliveries and the age of the oldest, for metrics and back-pressure.
    async fn queue_depth(&self) -> Result<(u64, Option<DateTime<Utc>>), StoreError>;
}

const SUBSCRIPTION_COLUMNS: &str = "id, end_point, resource_filter, source_filter, subject_filter, \
     alternative_subject_filter, type_filter, include_subunits, consumer, created_by, principal, \
     secret, created, start_seq, validated, enabled, disabled_reason, max_events_per_batch, \
     max_wait_ms, consecutive_failures, failing_since, last_success, last_failure, last_error, \
     rest_until, previous_secret, previous_secret_until, rate_limit";

/// SQLite allows 32,766 bound parameters per statement; 5 per delivery row.
pub(crate) const DELIVERIES_PER_INSERT: usize = 1000;

pub(crate) fn subscription_select(filter: &str) -> String {
    format!("{} {filter} ORDER BY id", subscriptions_not_deleted())
}

/// The start of a select of subscriptions, for a caller that adds its own conditions.
pub(crate) fn subscriptions_not_deleted() -> String {
    format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE NOT deleted")
}

/// Marks a change of the live subscriptions; run in the change's transaction.
pub(crate) const BUMP_GENERATION: &str =
    "UPDATE subscription_generation SET generation = generation + 1 WHERE singleton";

/// Makes a subscription's pending deliveries (`$1`) due at `$2` (now), retries and rested ones
/// too: its owner says the endpoint is back. Run in the enable's or redrive's transaction.
pub(crate) const DUE_NOW: &str = "UPDATE deliveries SET next_attempt = $2 \
     WHERE subscription_id = $1 AND state = 'pending' AND next_attempt > $2";

/// A count stored as a signed integer (PostgreSQL has no unsigned ones).
pub(crate) fn stored_u32(value: i64) -> u32 {
    u32::try_from(value.max(0)).unwrap_or(u32::MAX)
}

/// A batch's events as `batch_seqs` stores them; `None` for a delivery of one event.
pub(crate) fn seqs_of(stored: Option<String>) -> Option<Vec<i64>> {
    stored.map(|text| {
        text.split(',')
            .filter_map(|seq| seq.trim().parse().ok())
            .collect()
    })
}

pub(crate) fn status_of(value: Option<i64>) -> Option<u16> {
    value.and_then(|v| u16::try_from(v).ok())
}

mod backend;
mod change;
pub mod health;
mod history;
mod replay;
pub(crate) use backend::impl_push_store;
pub(crate) use change::impl_change_store;
pub use change::{Permit, StoredSecrets, SubscriptionChange};
pub(crate) use health::impl_health_store;
pub use health::{EndpointHealth, EndpointReport};
pub(crate) use history::impl_history_store;
pub use replay::{NewReplay, ReplayOutcome, StoredReplay};
pub(crate) use replay::{REPLAY_DELIVERIES_PER_INSERT, impl_replay_store, replay_of};

#[cfg(test)]
mod tests {
    use super::*;

    fn record(delivery_id: i64, owner: &str) -> AttemptRecord {
        AttemptRecord {
            delivery_id,
            subscription_id: 1,
            lease_owner: owner.to_owned(),
            at: Utc::now(),
            status: Some(200),
            error: None,
            next: Next::Delivered,
            validates: false,
            disable: None,
            endpoint: None,
            end_point: None,
        }
    }

    #[test]
    fn a_round_holds_each_delivery_once_and_keeps_the_order() {
        let records = [
            record(1, "a"),
            record(2, "a"),
            record(1, "b"),
            record(3, "a"),
            record(1, "c"),
            record(2, "b"),
        ];
        assert_eq!(
            rounds_of_distinct_deliveries(&records),
            [vec![0, 1, 3], vec![2, 5], vec![4]]
        );
        assert!(rounds_of_distinct_deliveries(&[]).is_empty());
    }

    #[test]
    fn a_round_stays_within_the_bound_values_a_statement_takes() {
        let records: Vec<AttemptRecord> = (0..2500).map(|id| record(id, "a")).collect();
        let sizes: Vec<usize> = rounds_of_distinct_deliveries(&records)
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, [1000, 1000, 500]);
    }
}
