//! Delivery workers: lease due deliveries from the store, POST them, and record each attempt with
//! its verdict. A lease outlives the request timeout, so a worker that dies mid-delivery only
//! delays the delivery until its lease expires; it is then sent again (at least once).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use hendelse_auth::{Action, Authorizer, EventFacts, Principal};
use hendelse_store::push::{
    AttemptRecord, Disable, EndpointReport, LeaseRequest, LeasedDelivery, Next, Permit,
    Subscription,
};
use hendelse_store::{EventStore, PushStore};
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use std::sync::Mutex;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot, watch};
use tracing::Instrument;

use crate::PushConfig;
use crate::endpoint::{GuardedResolver, refuses_literal};
use crate::schedule::is_gone;
use crate::secrets::SecretKeys;
use crate::signing::Secret;

const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";
const CLOUDEVENTS_BATCH_JSON: &str = "application/cloudevents-batch+json";
/// On a delivery queued by a replay: the replay's id (`replayId` in the deliveries listing).
pub const REPLAY_HEADER: &str = "hendelse-replay-id";
/// How many times its cap a subscription may have leased (in flight and queued) at once.
const LEASE_AHEAD: u32 = 4;
/// After this long in the queue, a delivery's subscription is read again before it is sent.
const REREAD_AFTER: Duration = Duration::from_secs(1);
/// How long a delivery waits when access cannot be decided (the decision point is down).
const UNDECIDED_WAIT: Duration = Duration::from_secs(5);
/// Time kept between the end of a queued delivery's attempt and the end of its lease.
const STALE_MARGIN: Duration = Duration::from_secs(5);
/// How often a wide lease may skip past the queues of subscriptions at their cap.
const SKIPPING_LEASE_EVERY: Duration = Duration::from_millis(25);
/// Most attempts recorded in one transaction.
const RECORD_BATCH: usize = 256;

/// The webhook client: no redirects, the configured timeout, and a resolver that refuses
/// non-public addresses unless the policy allows them.
pub fn client(config: &PushConfig) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(config.timeout)
        .connect_timeout(config.timeout.min(Duration::from_secs(10)))
        .dns_resolver(GuardedResolver {
            allow_private: config.policy.allow_private,
        })
        .no_proxy()
        .user_agent(concat!("hendelse/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// What the workers work with: the log, the queue, the access decisions and the keys that open
/// the subscriptions' secrets.
pub struct WorkerParts {
    pub events: Arc<dyn EventStore>,
    pub push: Arc<dyn PushStore>,
    pub authorizer: Arc<dyn Authorizer>,
    pub secret_keys: Arc<SecretKeys>,
}

pub async fn run(
    parts: WorkerParts,
    client: reqwest::Client,
    config: PushConfig,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let WorkerParts {
        events,
        push,
        authorizer,
        secret_keys,
    } = parts;
    let owner = format!("worker-{}", uuid::Uuid::new_v4().simple());
    let concurrency = config.concurrency.max(1);
    // One endpoint may hold only so many slots: a slow one cannot starve the others.
    let per_subscription =
        u32::try_from(config.per_subscription.clamp(1, concurrency)).unwrap_or(u32::MAX);
    let slots = Arc::new(Semaphore::new(concurrency));
    let in_flight = Arc::new(Mutex::new(HashMap::<i64, u32>::new()));
    // Rung by every finished (and recorded) attempt: its subscription has room again, or has
    // just been validated, so that is the moment to lease, not the next poll.
    let freed = Arc::new(Notify::new());
    let lease_for = config.timeout + Duration::from_secs(30);
    let grace = config.timeout.min(Duration::from_secs(10));
    let (recorder, records) = mpsc::channel(concurrency.saturating_mul(2));
    tokio::spawn(record_in_batches(push.clone(), records));
    let context = Arc::new(Context {
        events,
        secret_keys,
        deferring: Arc::new(Mutex::new(HashSet::new())),
        resting: Mutex::new(HashMap::new()),
        push,
        authorizer,
        client,
        config,
        owner,
        recorder,
    });
    // Leased but not started yet. Leasing ahead (up to LEASE_AHEAD times a subscription's cap,
    // and twice the slots in all) lets one lease serve many attempts: leasing one delivery per
    // freed slot made every attempt cost a write transaction of its own.
    let mut queued: VecDeque<Queued> = VecDeque::new();
    let ahead = per_subscription.saturating_mul(LEASE_AHEAD);
    // A delivery that waited in the queue so long that its lease would run out during its
    // attempt is left for a later lease rather than risk being sent twice at once.
    let stale_after = lease_for.saturating_sub(context.config.timeout + STALE_MARGIN);
    // Whether a lease may find work of subscriptions this worker holds nothing of. Cleared when
    // one found nothing; set again by a wake, the poll or a validation. Without it every
    // finished attempt cost a lease that scanned past the busy subscriptions' queues for
    // nothing.
    let mut look_wide = true;
    let gate = Gate {
        slots: slots.clone(),
        in_flight: in_flight.clone(),
        per_subscription,
        stale_after,
        freed: freed.clone(),
        wake: wake.clone(),
    };
    // When the last wide lease that had to skip subscriptions at their cap was made.
    let mut last_skipping_lease: Option<Instant> = None;
    while !*shutdown.borrow() {
        let started = start_what_has_room(&mut queued, &gate, &context);
        let (exclude, room) = lease_limits(&in_flight, &queued, ahead);
        // A wide lease reads past every due delivery of the subscriptions it excludes, which for
        // one subscription with a backlog of 100,000 is the whole backlog, on the one writer
        // that the publishes need too. Under steady publishing a wake comes with every page the
        // dispatcher queues, so such leases are made at most every SKIPPING_LEASE_EVERY; a
        // lease that excludes nothing reads only what it takes and goes at once.
        let skipping_wait = if look_wide && !exclude.is_empty() {
            last_skipping_lease
                .map(|at| SKIPPING_LEASE_EVERY.saturating_sub(at.elapsed()))
                .filter(|wait| !wait.is_zero())
        } else {
            None
        };
        let wide = look_wide && skipping_wait.is_none();
        if queued.len() < concurrency && (wide || !room.is_empty()) {
            if wide && !exclude.is_empty() {
                last_skipping_lease = Some(Instant::now());
            }
            let now = Utc::now();
            let request = LeaseRequest {
                owner: &context.owner,
                now,
                until: now + chrono::Duration::from_std(lease_for).unwrap_or(chrono::Duration::MAX),
                limit: u32::try_from(concurrency.saturating_mul(2) - queued.len())
                    .unwrap_or(u32::MAX),
                per_subscription: ahead,
                exclude: &exclude,
                room: &room,
                wide,
            };
            let leased = match context.push.lease(&request).await {
                Ok(leased) => leased,
                Err(e) => {
                    tracing::warn!(error = %e, "delivery worker: cannot lease; will try again");
                    Vec::new()
                }
            };
            if leased.is_empty() {
                if wide {
                    look_wide = false;
                }
            } else if let Some(subscriptions) = context.subscriptions_of(&leased).await {
                let at = Instant::now();
                queued.extend(leased.into_iter().map(|delivery| Queued {
                    subscription: subscriptions.get(&delivery.subscription_id).cloned(),
                    delivery,
                    at,
                }));
                continue;
            }
        }
        if started && slots.available_permits() > 0 && queued.is_empty() {
            continue;
        }
        // Nothing more to start or lease now. A finished attempt may change that (room for a
        // subscription at its cap, or a validated subscription whose queue may now go out); new
        // work, a retry coming due or another node's work come with a wake or the poll.
        let poll = skipping_wait.map_or(context.config.poll_interval, |wait| {
            wait.min(context.config.poll_interval)
        });
        tokio::select! {
            _ = wake.notified() => look_wide = true,
            _ = freed.notified() => {}
            _ = shutdown.changed() => {}
            _ = tokio::time::sleep(poll) => look_wide = true,
        }
    }
    // Shutting down: let requests in flight finish for a while, then hand back what is left.
    let all = u32::try_from(concurrency).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            "delivery worker: requests still in flight at shutdown are sent again later"
        );
    }
    match context.push.release(&context.owner).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(released = n, "delivery worker: leases handed back"),
        Err(e) => {
            tracing::warn!(error = %e, "delivery worker: cannot hand back leases; they expire")
        }
    }
}

/// A leased delivery waiting for a slot and for room under its subscription's cap.
struct Queued {
    delivery: LeasedDelivery,
    subscription: Option<Subscription>,
    at: Instant,
}

/// What decides whether a queued delivery may start, and whom a finished one tells.
struct Gate {
    slots: Arc<Semaphore>,
    in_flight: Arc<Mutex<HashMap<i64, u32>>>,
    per_subscription: u32,
    stale_after: Duration,
    freed: Arc<Notify>,
    wake: Arc<Notify>,
}

/// Starts queued deliveries, oldest first, while there are free slots and their subscriptions
/// have room; returns whether it started any.
fn start_what_has_room(queued: &mut VecDeque<Queued>, gate: &Gate, context: &Arc<Context>) -> bool {
    let Gate {
        slots,
        in_flight,
        per_subscription,
        stale_after,
        freed,
        wake,
    } = gate;
    let (per_subscription, stale_after) = (*per_subscription, *stale_after);
    let mut started = false;
    // Deliveries leased before their endpoint began to rest, per subscription: handed back.
    let mut resting: HashMap<i64, (chrono::DateTime<Utc>, Vec<i64>)> = HashMap::new();
    let mut i = 0;
    while i < queued.len() && slots.available_permits() > 0 {
        let id = queued[i].delivery.subscription_id;
        if lock(in_flight).get(&id).copied().unwrap_or(0) >= per_subscription {
            i += 1;
            continue;
        }
        let Some(next) = queued.remove(i) else {
            break;
        };
        // A handshake goes out regardless: it may be for a new endpoint (a PATCH ends the rest).
        if next.delivery.event_seq.is_some()
            && let Some(until) = context.rest_since(id, next.at)
        {
            resting
                .entry(id)
                .or_insert_with(|| (until, Vec::new()))
                .1
                .push(next.delivery.id);
            continue;
        }
        if next.at.elapsed() > stale_after {
            tracing::debug!(
                delivery = next.delivery.id,
                "delivery worker: a queued delivery waited too long; it is sent after its lease expires"
            );
            continue;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            queued.insert(i, next);
            break;
        };
        *lock(in_flight).entry(id).or_default() += 1;
        started = true;
        let (context, in_flight, freed) = (context.clone(), in_flight.clone(), freed.clone());
        // A handshake that succeeds lets the subscription's queue go out: new work to look for.
        let validation = next.delivery.event_seq.is_none().then(|| wake.clone());
        // What the lease read of the subscription may be out of date after a wait in the queue:
        // one deleted, disabled or unvalidated (a new endpoint) meanwhile gets nothing more.
        let reread = next.at.elapsed() > REREAD_AFTER;
        let send_by = next.at + stale_after;
        tokio::spawn(async move {
            let subscription = if reread {
                match context.push.subscription(id).await {
                    Ok(current) => current,
                    Err(e) => {
                        tracing::warn!(error = %e, "delivery worker: cannot read a subscription");
                        next.subscription
                    }
                }
            } else {
                next.subscription
            };
            // An event waits (its lease runs out) while the endpoint is not validated: after a
            // PATCH of the endpoint nothing goes to the new one before its handshake.
            let is_handshake = next.delivery.event_seq.is_none();
            if subscription
                .as_ref()
                .is_none_or(|s| s.enabled && (s.validated || is_handshake))
            {
                context.deliver(next.delivery, subscription, send_by).await;
            }
            if let Some(wake) = validation {
                wake.notify_one();
            }
            {
                let mut counts = lock(&in_flight);
                if let Some(n) = counts.get_mut(&id) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        counts.remove(&id);
                    }
                }
            }
            drop(permit);
            freed.notify_one();
        });
    }
    for (subscription, (until, ids)) in resting {
        let context = context.clone();
        tokio::spawn(async move {
            match context
                .push
                .release_until(&context.owner, &ids, until)
                .await
            {
                Ok(n) => tracing::debug!(
                    subscription,
                    released = n,
                    "delivery worker: deliveries of a resting endpoint handed back until its rest ends"
                ),
                Err(e) => {
                    tracing::warn!(subscription, error = %e, "delivery worker: cannot hand back a resting endpoint's deliveries; they go out when their leases expire")
                }
            }
        });
    }
    started
}

/// What the next lease may take: no subscription beyond `ahead` in flight and queued together,
/// and none that still holds half of that, so that a busy subscription is topped up in chunks
/// rather than one delivery per finished attempt.
fn lease_limits(
    in_flight: &Mutex<HashMap<i64, u32>>,
    queued: &VecDeque<Queued>,
    ahead: u32,
) -> (Vec<i64>, Vec<(i64, u32)>) {
    let mut held = lock(in_flight).clone();
    for q in queued {
        *held.entry(q.delivery.subscription_id).or_default() += 1;
    }
    let refill_below = (ahead / 2).max(1);
    let exclude = held
        .iter()
        .filter(|(_, n)| **n >= refill_below)
        .map(|(id, _)| *id)
        .collect();
    let room = held
        .iter()
        .filter(|(_, n)| **n < refill_below)
        .map(|(id, n)| (*id, ahead - n))
        .collect();
    (exclude, room)
}

/// The in-flight counts; a panic elsewhere cannot leave them unusable.
/// The `traceparent` a delivery carries: its publish request's, else the event's own CloudEvents
/// distributed-tracing attribute; none for a batch (its events may belong to many traces).
fn trace_of(delivery: &LeasedDelivery, body: &str) -> Option<String> {
    if delivery.batch.is_some() {
        return None;
    }
    if let Some(traceparent) = delivery.traceparent.as_deref() {
        return Some(traceparent.to_owned());
    }
    if !body.contains("\"traceparent\"") {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Traced {
        traceparent: Option<String>,
    }
    let traced: Traced = serde_json::from_str(body).ok()?;
    hendelse_model::trace::traceparent(traced.traceparent.as_deref()?).map(str::to_owned)
}

/// Moves the subscription's queue to the end of its endpoint's rest, chunk by chunk, so that
/// leases do not read past it meanwhile. One mover per subscription at a time.
async fn defer_queue(
    push: Arc<dyn PushStore>,
    deferring: Arc<Mutex<HashSet<i64>>>,
    subscription_id: i64,
) {
    if !lock_set(&deferring).insert(subscription_id) {
        return;
    }
    loop {
        match push.defer_resting(subscription_id, Utc::now()).await {
            Ok(moved) if moved >= u64::from(hendelse_store::push::health::DEFER_CHUNK) => {}
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(subscription = subscription_id, error = %e, "cannot move a resting endpoint's queue; leases skip it meanwhile");
                break;
            }
        }
    }
    lock_set(&deferring).remove(&subscription_id);
}

fn lock_set(set: &Mutex<HashSet<i64>>) -> std::sync::MutexGuard<'_, HashSet<i64>> {
    set.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A rest this worker recorded for an endpoint.
struct Rest {
    recorded: Instant,
    until: chrono::DateTime<Utc>,
}

fn lock_rests(rests: &Mutex<HashMap<i64, Rest>>) -> std::sync::MutexGuard<'_, HashMap<i64, Rest>> {
    rests
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock(counts: &Mutex<HashMap<i64, u32>>) -> std::sync::MutexGuard<'_, HashMap<i64, u32>> {
    counts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Context {
    /// The log, where a subscription disabled for failing is announced.
    events: Arc<dyn EventStore>,
    /// Open the subscriptions' sealed secrets.
    secret_keys: Arc<SecretKeys>,
    /// Subscriptions whose queue is being moved to the end of their endpoint's rest.
    deferring: Arc<Mutex<HashSet<i64>>>,
    /// Subscriptions whose endpoint this worker saw fail: when the failure was recorded, and until
    /// when the endpoint rests. What it leased of them before that is not sent meanwhile (its
    /// leases run out; the lease takes nothing of a resting endpoint). What it leases after is
    /// sent: the store said the rest is over (an enable, a new endpoint).
    resting: Mutex<HashMap<i64, Rest>>,
    push: Arc<dyn PushStore>,
    authorizer: Arc<dyn Authorizer>,
    client: reqwest::Client,
    config: PushConfig,
    owner: String,
    recorder: mpsc::Sender<Recording>,
}

/// An attempt to record, and where to say whether it was.
type Recording = (AttemptRecord, oneshot::Sender<bool>);

/// Records the attempts that finish together in one transaction: each is a durable write, and a
/// transaction apiece bounded deliveries/s by the store's commit rate. It ends when every
/// delivery holding a sender has finished.
async fn record_in_batches(push: Arc<dyn PushStore>, mut queue: mpsc::Receiver<Recording>) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    while queue.recv_many(&mut batch, RECORD_BATCH).await > 0 {
        let (records, replies): (Vec<AttemptRecord>, Vec<oneshot::Sender<bool>>) =
            batch.drain(..).unzip();
        match push.record_attempts(&records).await {
            Ok(recorded) => {
                for (reply, ok) in replies.into_iter().zip(recorded) {
                    let _ = reply.send(ok);
                }
            }
            Err(e) => {
                // One bad record (or a lost connection) must not cost the whole batch a second
                // send: each is tried again on its own. What still fails is sent again when its
                // lease runs out (at least once).
                tracing::warn!(attempts = records.len(), error = %e, "cannot record webhook attempts together; recording them one by one");
                for (record, reply) in records.iter().zip(replies) {
                    let recorded = match push.record_attempt(record).await {
                        Ok(recorded) => recorded,
                        Err(e) => {
                            tracing::warn!(delivery = record.delivery_id, error = %e, "cannot record a webhook attempt");
                            false
                        }
                    };
                    let _ = reply.send(recorded);
                }
            }
        }
    }
}

/// Why no permit of a rate limit was had.
enum PermitWait {
    /// It would come after the lease's last moment to send.
    TooLate,
    Store(hendelse_store::StoreError),
}

/// What one attempt came to.
struct Outcome {
    status: Option<u16>,
    retry_after: Option<Duration>,
    error: Option<String>,
    kind: Kind,
}

/// Whether the request went out, and what a failure says about the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The request was made: its answer (or its failure) is the endpoint's.
    Sent,
    /// Refused before sending: no retry can help.
    Refused,
    /// Not sent for a cause of this node's (its store, its keys): retried on the delivery's
    /// schedule, and nothing is held against the endpoint.
    Unsent,
    /// Not sent because the lease would run out during the attempt: nothing is recorded, and the
    /// delivery goes out when its lease has run out (never twice at once).
    Abandoned,
    /// Not sent because access cannot be decided now (the decision point does not answer): the
    /// delivery waits, handed back for a while, with no attempt counted (it is never
    /// dead-lettered for this).
    Undecided,
}

impl Outcome {
    fn answered(status: Option<u16>, retry_after: Option<Duration>, error: Option<String>) -> Self {
        Outcome {
            status,
            retry_after,
            error,
            kind: Kind::Sent,
        }
    }

    fn refused(error: impl Into<String>) -> Self {
        Outcome::not_sent(Kind::Refused, error)
    }

    fn unsent(error: impl Into<String>) -> Self {
        Outcome::not_sent(Kind::Unsent, error)
    }

    fn not_sent(kind: Kind, error: impl Into<String>) -> Self {
        Outcome {
            status: None,
            retry_after: None,
            error: Some(error.into()),
            kind,
        }
    }
}

impl Context {
    /// The end of the rest of the endpoint of a delivery leased at `leased`, when this worker
    /// recorded a failure of it after that and the rest is not over.
    fn rest_since(&self, subscription_id: i64, leased: Instant) -> Option<chrono::DateTime<Utc>> {
        lock_rests(&self.resting)
            .get(&subscription_id)
            .filter(|rest| rest.recorded > leased && rest.until > Utc::now())
            .map(|rest| rest.until)
    }

    /// The subscriptions of the leased deliveries, read together (a deleted one is absent);
    /// `None` when they cannot be read.
    async fn subscriptions_of(
        &self,
        leased: &[LeasedDelivery],
    ) -> Option<HashMap<i64, Subscription>> {
        let mut ids: Vec<i64> = leased.iter().map(|d| d.subscription_id).collect();
        ids.sort_unstable();
        ids.dedup();
        match self.push.subscriptions_with_ids(&ids).await {
            Ok(found) => Some(found.into_iter().map(|s| (s.id, s)).collect()),
            Err(e) => {
                tracing::warn!(error = %e, "delivery worker: cannot read the subscriptions of a lease; its deliveries go out when the lease runs out");
                None
            }
        }
    }

    /// Makes one attempt and records it; `send_by` is the last moment its request may start
    /// with the lease still outliving the request timeout.
    async fn deliver(
        &self,
        delivery: LeasedDelivery,
        subscription: Option<Subscription>,
        send_by: Instant,
    ) {
        let attempt = usize::try_from(delivery.attempts).unwrap_or(usize::MAX - 1) + 1;
        let outcome = match &subscription {
            None => Outcome::refused("the subscription was deleted"),
            Some(s) => self.attempt(&delivery, s, send_by).await,
        };
        if outcome.kind == Kind::Undecided {
            let until = Utc::now() + chrono::Duration::from_std(UNDECIDED_WAIT).unwrap_or_default();
            tracing::info!(
                delivery = delivery.id,
                error = outcome.error.as_deref(),
                "delivery worker: a delivery waits for the authorization decision point"
            );
            metrics::counter!("hendelse_webhook_attempts_total", "outcome" => "undecided")
                .increment(1);
            if let Err(e) = self
                .push
                .release_until(&self.owner, &[delivery.id], until)
                .await
            {
                tracing::warn!(delivery = delivery.id, error = %e, "cannot hand back an undecided delivery; it goes out when its lease expires");
            }
            return;
        }
        if outcome.kind == Kind::Abandoned {
            tracing::debug!(
                delivery = delivery.id,
                "delivery worker: the rate limit's wait outlasted the lease; it is sent after the lease expires"
            );
            return;
        }
        let now = Utc::now();
        let next = if outcome.kind == Kind::Refused {
            Next::Dead
        } else {
            self.config.schedule.verdict(
                attempt,
                outcome.status,
                outcome.retry_after,
                now,
                jitter(),
            )
        };
        let gone = outcome.kind == Kind::Sent && is_gone(outcome.status);
        // Successes at debug level: at thousands of deliveries a second they would drown the
        // failures, which are what an operator looks for (metrics count both).
        macro_rules! log_attempt {
            ($level:ident) => {
                tracing::$level!(
                    subscription = delivery.subscription_id,
                    delivery = delivery.id,
                    event = %delivery.event_id,
                    attempt,
                    status = outcome.status,
                    error = outcome.error.as_deref(),
                    outcome = ?next,
                    "webhook attempt"
                )
            };
        }
        if next == Next::Delivered {
            log_attempt!(debug);
        } else {
            log_attempt!(info);
        }
        let outcome_label = match next {
            Next::Delivered => "delivered",
            Next::RetryAt(_) => "retry",
            Next::Dead => "dead",
        };
        metrics::counter!("hendelse_webhook_attempts_total", "outcome" => outcome_label)
            .increment(1);
        // Only a request that was sent says something about the endpoint.
        let endpoint = match (&subscription, outcome.kind) {
            (Some(s), Kind::Sent) => Some(crate::health::report(
                &self.config.schedule,
                s,
                outcome.status,
                outcome.error.as_deref(),
                outcome.retry_after,
                now,
            )),
            _ => None,
        };
        let mut disable = disable_reason(gone);
        if disable.is_none()
            && let (Some(s), Some(EndpointReport::Failure { class, .. })) =
                (&subscription, &endpoint)
            && let Some(reason) = crate::health::overdue(s, now, self.config.disable_after, class)
        {
            disable = self
                .announce_disabled(s, reason, now)
                .await
                .map(|reason| Disable {
                    reason,
                    streak_began: s.health.failing_since,
                });
        }
        let rest_until = match &endpoint {
            Some(EndpointReport::Failure { rest_until, .. }) => Some(*rest_until),
            _ => None,
        };
        let rests = rest_until.is_some();
        let succeeded = matches!(endpoint, Some(EndpointReport::Success));
        let record = AttemptRecord {
            delivery_id: delivery.id,
            subscription_id: delivery.subscription_id,
            lease_owner: self.owner.clone(),
            at: now,
            status: outcome.status,
            error: outcome.error,
            next,
            validates: delivery.event_seq.is_none() && next == Next::Delivered,
            disable,
            endpoint,
            end_point: subscription.as_ref().map(|s| s.spec.end_point.clone()),
        };
        // Held until recorded, so the slot (and the per-endpoint share) stays taken meanwhile.
        let (reply, recorded) = oneshot::channel();
        let recorded =
            self.recorder.send((record, reply)).await.is_ok() && recorded.await == Ok(true);
        if recorded {
            let mut resting = lock_rests(&self.resting);
            match rest_until {
                Some(until) => {
                    resting.insert(
                        delivery.subscription_id,
                        Rest {
                            recorded: Instant::now(),
                            until,
                        },
                    );
                }
                // Only a success ends the rest: a refusal or an unsent attempt says nothing.
                None if succeeded => {
                    resting.remove(&delivery.subscription_id);
                }
                None => {}
            }
            resting.retain(|_, rest| rest.until > now);
        }
        if recorded && rests {
            tokio::spawn(defer_queue(
                self.push.clone(),
                self.deferring.clone(),
                delivery.subscription_id,
            ));
        }
    }

    /// Waits for the subscription's next permit under its rate limit, which every node takes
    /// from the same place in the store, so that together they never send faster; gives up when
    /// the permit comes after `send_by` (the permit is then left unused: the rate only drops).
    async fn wait_for_permit(
        &self,
        subscription_id: i64,
        rate: u32,
        send_by: Instant,
    ) -> Result<(), PermitWait> {
        let interval = Duration::from_micros(1_000_000 / u64::from(rate.max(1)));
        loop {
            let permit = self
                .push
                .claim_permit(subscription_id, Utc::now())
                .await
                .map_err(PermitWait::Store)?;
            let wait = match permit {
                Permit::Unlimited => return Ok(()),
                Permit::At(at) => (at - Utc::now()).to_std().unwrap_or_default(),
                // The next second's permits are taken: ask again after one interval.
                Permit::Busy => interval.max(Duration::from_millis(5)),
            };
            if Instant::now() + wait > send_by {
                return Err(PermitWait::TooLate);
            }
            tokio::time::sleep(wait).await;
            if matches!(permit, Permit::At(_)) {
                return Ok(());
            }
        }
    }

    /// Publishes that the subscription is disabled, before the disable is recorded (so that a
    /// crash between the two announces it again, under the same id, rather than never); the
    /// reason to record, or `None` to try again at the next failure when the log refuses.
    async fn announce_disabled(
        &self,
        subscription: &Subscription,
        reason: String,
        now: chrono::DateTime<Utc>,
    ) -> Option<String> {
        let event = crate::health::disabled_event(subscription, &reason, now);
        match self.events.append(std::slice::from_ref(&event)).await {
            Ok(_) => {
                tracing::warn!(subscription = subscription.id, consumer = %subscription.spec.consumer, %reason, "subscription disabled");
                Some(reason)
            }
            Err(e) => {
                tracing::warn!(subscription = subscription.id, error = %e, "cannot announce that a failing subscription is disabled; it stays enabled for now");
                None
            }
        }
    }

    async fn attempt(
        &self,
        delivery: &LeasedDelivery,
        subscription: &Subscription,
        send_by: Instant,
    ) -> Outcome {
        let (body, content_type) = match self.message(delivery, subscription).await {
            Ok(message) => message,
            Err(outcome) => return outcome,
        };
        let Ok(url) = reqwest::Url::parse(&subscription.spec.end_point) else {
            return Outcome::refused("the endpoint is not a URL");
        };
        if refuses_literal(&url, self.config.policy) {
            return Outcome::refused("the endpoint is a non-public address");
        }
        let signing = match self.signing_secrets(subscription) {
            Ok(secrets) => secrets,
            Err(outcome) => return outcome,
        };
        // The permit is taken before the timestamp and signatures are made, so that a receiver's
        // tolerance for old timestamps counts from the moment of sending.
        if let Some(rate) = subscription.spec.rate_limit
            && let Err(e) = self.wait_for_permit(subscription.id, rate, send_by).await
        {
            return match e {
                PermitWait::TooLate => Outcome::not_sent(Kind::Abandoned, "rate limit"),
                PermitWait::Store(e) => {
                    Outcome::unsent(format!("cannot take a permit of the rate limit: {e}"))
                }
            };
        }
        let span = self.attempt_span(delivery, subscription, &url);
        let timestamp = Utc::now().timestamp();
        let mut request = self
            .client
            .post(url)
            .header(CONTENT_TYPE, content_type)
            .header("webhook-id", &delivery.webhook_id)
            .header("webhook-timestamp", timestamp.to_string());
        if let Some(traceparent) = self
            .config
            .spans
            .adopt(&span, trace_of(delivery, &body).as_deref())
        {
            // The subscriber's span continues the producer's trace.
            request = request.header("traceparent", traceparent);
        }
        if let Some(replay) = delivery.replay {
            // The receiver can tell a replayed event from a live one (same CloudEvent id).
            request = request.header(REPLAY_HEADER, replay.to_string());
        }
        let signatures: Vec<String> = signing
            .iter()
            .map(|secret| secret.sign(&delivery.webhook_id, timestamp, &body))
            .collect();
        if !signatures.is_empty() {
            request = request.header("webhook-signature", signatures.join(" "));
        }
        // What came before (a reread, the batch's events, a decision point) may have taken the
        // lease's margin: a request that starts late could still be running when another worker
        // leases the delivery.
        if Instant::now() > send_by {
            return Outcome::not_sent(Kind::Abandoned, "the lease's time to send ran out");
        }
        let sent = request.body(body).send().instrument(span.clone()).await;
        match &sent {
            Ok(response) => {
                span.record(
                    "http.response.status_code",
                    i64::from(response.status().as_u16()),
                );
                if !response.status().is_success() {
                    span.record("otel.status_code", "error");
                }
            }
            Err(_) => {
                span.record("otel.status_code", "error");
            }
        }
        match sent {
            Ok(response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                Outcome::answered(
                    Some(status.as_u16()),
                    retry_after,
                    (!status.is_success()).then(|| format!("the endpoint answered {status}")),
                )
            }
            // Without the URL: it may carry a token in its query.
            Err(e) => Outcome::answered(None, None, Some(describe(&e.without_url()))),
        }
    }

    /// The span of one attempt, when spans are made: named by what it does, with the endpoint's
    /// host only (a path or query may carry a token).
    fn attempt_span(
        &self,
        delivery: &LeasedDelivery,
        subscription: &Subscription,
        url: &reqwest::Url,
    ) -> tracing::Span {
        if !self.config.spans.enabled() {
            return tracing::Span::none();
        }
        tracing::info_span!(
            "webhook attempt",
            otel.name = "POST webhook",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = "POST",
            server.address = url.host_str().unwrap_or_default(),
            http.response.status_code = tracing::field::Empty,
            hendelse.subscription.id = subscription.id,
            hendelse.delivery.id = delivery.id,
            hendelse.delivery.attempt = delivery.attempts + 1,
            cloudevents.event_id = %delivery.event_id,
        )
    }

    /// The secrets that sign: the subscription's, and during a rotation the previous one too
    /// (Standard Webhooks takes a list of signatures), so that a receiver may switch to the new
    /// one at any moment of the overlap.
    fn signing_secrets(&self, subscription: &Subscription) -> Result<Vec<Secret>, Outcome> {
        let previous = subscription
            .previous_secret
            .as_ref()
            .filter(|(_, until)| *until > Utc::now())
            .map(|(secret, _)| secret.as_str());
        let mut secrets = Vec::new();
        for sealed in subscription
            .spec
            .secret
            .as_deref()
            .into_iter()
            .chain(previous)
        {
            // A key this node does not have yet is one being rolled out to the nodes one by one
            // (see the README on key rotation): the delivery waits for a node that has it.
            let Ok(secret) = self.secret_keys.open(sealed) else {
                return Err(Outcome::unsent(
                    "the subscription's secret does not open with this node's secret keys",
                ));
            };
            match Secret::parse(&secret) {
                Ok(secret) => secrets.push(secret),
                Err(_) => return Err(Outcome::refused("the subscription's secret is unusable")),
            }
        }
        Ok(secrets)
    }

    /// What to POST and its content type: the handshake or the event as stored, or a batch's
    /// events as a JSON array, each checked against the subscriber's current access. An `Err` is
    /// the outcome of an attempt that cannot be made.
    async fn message(
        &self,
        delivery: &LeasedDelivery,
        subscription: &Subscription,
    ) -> Result<(String, &'static str), Outcome> {
        let Some(seqs) = &delivery.batch else {
            if delivery.event_seq.is_none() {
                return Ok((delivery.body.clone(), CLOUDEVENTS_JSON));
            }
            if delivery.body.is_empty() {
                return Err(Outcome::refused(
                    "the event is no longer stored (retention)",
                ));
            }
            if self
                .readable(&[delivery.body.as_str()], subscription)
                .await?
                != [true]
            {
                return Err(Outcome::refused(
                    "the subscriber may no longer read this event",
                ));
            }
            return Ok((delivery.body.clone(), CLOUDEVENTS_JSON));
        };
        let stored = self
            .push
            .event_bodies(seqs)
            .await
            .map_err(|e| Outcome::unsent(format!("cannot read the batch's events: {e}")))?;
        let bodies: Vec<&str> = stored.iter().map(|(_, body)| body.as_str()).collect();
        let permitted = self.readable(&bodies, subscription).await?;
        let readable: Vec<&str> = bodies
            .into_iter()
            .zip(permitted)
            .filter_map(|(body, ok)| ok.then_some(body))
            .collect();
        if readable.is_empty() {
            return Err(Outcome::refused(
                "none of the batch's events is stored and readable by the subscriber any more",
            ));
        }
        Ok((format!("[{}]", readable.join(",")), CLOUDEVENTS_BATCH_JSON))
    }

    /// Which of `bodies` the subscriber may read now, asked together; an `Err` is the outcome of
    /// an attempt that must wait for the decision point.
    async fn readable(
        &self,
        bodies: &[&str],
        subscription: &Subscription,
    ) -> Result<Vec<bool>, Outcome> {
        let Ok(principal) = serde_json::from_str::<Principal>(&subscription.spec.principal) else {
            return Ok(vec![false; bodies.len()]);
        };
        let facts: Vec<EventFacts> = bodies
            .iter()
            .map(|body| EventFacts::of_json(body).unwrap_or_default())
            .collect();
        self.authorizer
            .permitted(&principal, Action::Read, &facts)
            .await
            .map_err(|e| Outcome::not_sent(Kind::Undecided, e.to_string()))
    }
}

/// Why the subscription stops taking deliveries after this attempt, if it does: its endpoint said
/// it is gone. (A handshake that is never confirmed disables nothing: events keep being queued and
/// go out once a redrive of the handshake succeeds, so nothing published meanwhile is lost.)
fn disable_reason(gone: bool) -> Option<Disable> {
    gone.then(|| Disable {
        reason: "the endpoint answered 410 Gone".to_owned(),
        streak_began: None,
    })
}

/// A failed request in a few words, with its innermost cause.
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "the request failed"
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    let mut innermost = None;
    while let Some(s) = source {
        innermost = Some(s.to_string());
        source = s.source();
    }
    match innermost {
        Some(cause) => format!("{kind}: {cause}"),
        None => kind.to_owned(),
    }
}

/// A number in `0.0..1.0` that spreads retries of many deliveries apart.
fn jitter() -> f64 {
    let mut byte = [0u8; 2];
    if aws_lc_rs::rand::fill(&mut byte).is_err() {
        return 0.5;
    }
    f64::from(u16::from_le_bytes(byte)) / f64::from(u16::MAX)
}
