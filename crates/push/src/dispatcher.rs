//! The dispatcher follows the event log from a persisted position and turns every match of an
//! event with a live subscription into a durable delivery, moving the position in the same
//! transaction. Positions become visible in commit order (the store's cursor guarantee), so
//! following them skips nothing; several nodes' dispatchers take turns on the position.
//!
//! A page without a match moves the position in memory only, stored at most every
//! [`PERSIST_IDLE_POSITION`] and when the dispatcher stops: otherwise every group commit would
//! cost a second durable commit (an fsync) just to record that nothing matched. After a crash the
//! dispatcher reads at most that second of events again. They again match nothing, since a
//! subscription only matches events after its `start_seq`, with one exception: a subscription
//! that a redrive enabled again within that second may receive events published while it was
//! disabled (more than it would otherwise get, never less).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use hendelse_auth::{Action, Authorizer, DecisionError, EventFacts, Principal};
use hendelse_model::Visibility;
use hendelse_store::push::{BatchOf, Batching, NewDelivery, SubscriptionToMatch};
use hendelse_store::{EventQuery, EventStore, PushStore, StoreError};
use tokio::sync::{Notify, watch};

use crate::filter::{EventAttributes, Matcher};

/// Events matched per transaction.
const BATCH: u32 = 500;
/// Pages matched after the stop signal, before the position is stored.
const FINAL_PAGES: usize = 4;
/// How long a position reached by pages without matches may stay in memory only.
const PERSIST_IDLE_POSITION: Duration = Duration::from_secs(1);

/// Follows the log until `stopping` turns true (or its sender is gone), then matches what is
/// committed (up to [`FINAL_PAGES`]) and stores the position it reached.
/// How a dispatcher runs.
#[derive(Debug, Clone, Copy)]
pub struct DispatchSettings {
    /// How often it looks for events nobody told it about (other nodes').
    pub poll: Duration,
    /// Whether each page it matches is a span.
    pub traced: bool,
}

pub async fn run(
    events: Arc<dyn EventStore>,
    push: Arc<dyn PushStore>,
    authorizer: Arc<dyn Authorizer>,
    mut committed: watch::Receiver<i64>,
    wake: Arc<Notify>,
    settings: DispatchSettings,
    mut stopping: watch::Receiver<bool>,
) {
    let DispatchSettings { poll, traced } = settings;
    let next_page = async |position: &mut Position| {
        step(
            position,
            events.as_ref(),
            push.as_ref(),
            authorizer.as_ref(),
            traced,
        )
        .await
    };
    let mut position = Position::default();
    while !*stopping.borrow() {
        match next_page(&mut position).await {
            Ok(Some(enqueued)) => {
                if enqueued > 0 {
                    wake.notify_one();
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "dispatcher: cannot match the next page now; will try again")
            }
        }
        tokio::select! {
            changed = committed.changed() => {
                if changed.is_err() {
                    // Nobody reports commits any more (shutting down): poll only.
                    tokio::time::sleep(poll).await;
                }
            }
            _ = tokio::time::sleep(poll) => {}
            _ = stopping.changed() => break,
        }
    }
    // Match what was committed before the stop (a few pages at most), then store the position.
    for _ in 0..FINAL_PAGES {
        if !matches!(next_page(&mut position).await, Ok(Some(_))) {
            break;
        }
    }
    if let Err(e) = persist(&mut position, push.as_ref()).await {
        tracing::warn!(error = %e, "dispatcher: cannot store its position; it matches again from the last one stored");
    }
}

/// A subscription ready for matching: what the dispatcher uses of it, no more (at 100,000
/// subscriptions every byte here is a tenth of a megabyte).
struct Target {
    id: i64,
    start_seq: i64,
    batching: Batching,
    /// Its subscriber, in [`Index::principals`].
    principal: usize,
    matcher: Matcher,
}

/// The live subscriptions as of one generation, indexed by resource and then by party subject, so
/// that an event is tested only against the subscriptions that can match it: those of its
/// resource with its subject, and those of its resource with no subject filter.
struct Index {
    generation: i64,
    targets: Vec<Target>,
    /// The distinct subscribers, parsed once (many subscriptions share one).
    principals: Vec<Principal>,
    by_resource: HashMap<String, Bucket>,
}

#[derive(Default)]
struct Bucket {
    by_subject: HashMap<String, Vec<usize>>,
    any_subject: Vec<usize>,
}

impl Index {
    fn build(
        generation: i64,
        live: Vec<SubscriptionToMatch>,
        authorizer: &dyn Authorizer,
    ) -> Index {
        let mut targets: Vec<Target> = Vec::with_capacity(live.len());
        let mut principals: Vec<Principal> = Vec::new();
        let mut principal_of: HashMap<String, usize> = HashMap::new();
        for subscription in live {
            let principal = match principal_of.get(&subscription.principal) {
                Some(&i) => i,
                None => {
                    let Ok(parsed) = serde_json::from_str::<Principal>(&subscription.principal)
                        .inspect_err(|e| {
                            tracing::error!(subscription = subscription.id, error = %e, "unreadable subscriber")
                        })
                    else {
                        continue;
                    };
                    principals.push(parsed);
                    principal_of.insert(subscription.principal.clone(), principals.len() - 1);
                    principals.len() - 1
                }
            };
            targets.push(Target {
                id: subscription.id,
                start_seq: subscription.start_seq,
                batching: subscription.batching,
                principal,
                matcher: Matcher::new(&subscription, authorizer),
            });
        }
        let mut by_resource: HashMap<String, Bucket> = HashMap::new();
        for (i, target) in targets.iter().enumerate() {
            let bucket = by_resource
                .entry(target.matcher.resource().to_owned())
                .or_default();
            match target.matcher.subjects() {
                None => bucket.any_subject.push(i),
                Some(subjects) => {
                    for subject in subjects {
                        bucket
                            .by_subject
                            .entry(subject.clone())
                            .or_default()
                            .push(i);
                    }
                }
            }
        }
        Index {
            generation,
            targets,
            principals,
            by_resource,
        }
    }

    /// The subscriptions that may match an event of `resource` about `subject`, in subscription
    /// order (so deliveries are queued in the same order however the index is built).
    fn candidates(&self, resource: Option<&str>, subject: Option<&str>) -> Vec<usize> {
        let Some(bucket) = resource.and_then(|r| self.by_resource.get(r)) else {
            return Vec::new();
        };
        let mut found = bucket.any_subject.clone();
        if let Some(with_subject) = subject.and_then(|s| bucket.by_subject.get(s)) {
            found.extend(with_subject);
            found.sort_unstable();
            found.dedup();
        }
        found
    }
}

/// Where this dispatcher is in the log, and the subscriptions it matches against.
#[derive(Default)]
pub struct Position {
    /// The stored position as this dispatcher last read or wrote it, and when; `None` before the
    /// first read and after another dispatcher moved it.
    stored: Option<(i64, Instant)>,
    /// Events up to here are matched (at or beyond the stored position).
    matched: i64,
    /// The live subscriptions, rebuilt only when their generation changes.
    index: Option<Index>,
}

impl Position {
    /// Just read or written: `seq` is both stored and matched.
    fn stored_at(seq: i64) -> Position {
        Position {
            stored: Some((seq, Instant::now())),
            matched: seq,
            index: None,
        }
    }

    /// Whether the position reached in memory should be stored now.
    fn persist_due(&self) -> bool {
        self.stored
            .is_none_or(|(_, at)| at.elapsed() >= PERSIST_IDLE_POSITION)
    }
}

/// Stores the position reached in memory, if it is ahead of the stored one.
pub async fn persist(position: &mut Position, push: &dyn PushStore) -> Result<(), StoreError> {
    if let Some((persisted, _)) = position.stored
        && position.matched > persisted
    {
        advance(position, push, persisted, position.matched, &[]).await?;
    }
    Ok(())
}

/// Why a page could not be matched now; it is matched again.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Undecided(#[from] DecisionError),
}

/// Matches the next page of the log; `None` when there was nothing new, otherwise how many
/// deliveries were queued (0 also when another dispatcher took the page first). `traced` makes a
/// span of each page (one for many events, which may belong to many traces: a root of its own,
/// named by the page's positions).
pub async fn step(
    position: &mut Position,
    events: &dyn EventStore,
    push: &dyn PushStore,
    authorizer: &dyn Authorizer,
    traced: bool,
) -> Result<Option<usize>, DispatchError> {
    let persisted = match position.stored {
        Some((persisted, _)) => persisted,
        None => {
            let stored = push.dispatch_position().await?;
            let index = position.index.take();
            *position = Position::stored_at(stored);
            position.index = index;
            stored
        }
    };
    let page = events
        .query(&EventQuery {
            after: position.matched,
            limit: BATCH,
            ..EventQuery::default()
        })
        .await?;
    let Some(last) = page.last().map(|e| e.seq) else {
        if position.persist_due() {
            persist(position, push).await?;
        }
        return Ok(None);
    };
    let span = if traced {
        tracing::info_span!(
            "dispatch",
            otel.name = "dispatch events",
            // Signed: OTLP has no unsigned integers, and an unsigned one is exported as text.
            hendelse.events = i64::try_from(page.len()).unwrap_or(i64::MAX),
            hendelse.seq.first = page.first().map_or(last, |e| e.seq),
            hendelse.seq.last = last,
            hendelse.deliveries = tracing::field::Empty,
        )
    } else {
        tracing::Span::none()
    };
    // The generation first: a change committed after it was read shows as a new one next page.
    let generation = push.subscription_generation().await?;
    let index = match position.index.take() {
        Some(index) if index.generation == generation => index,
        _ => Index::build(generation, push.subscriptions_to_match().await?, authorizer),
    };
    // Each subscriber's access, read once per page and only for subscribers an event of the page
    // may match (by index in `principals`), so that a change of access counts from the next page.
    let mut visibility: HashMap<usize, Visibility> = HashMap::new();
    let mut deliveries = Vec::new();
    // The target each delivery is for, beside it.
    let mut delivery_targets: Vec<usize> = Vec::new();
    // The events of each subscription that receives batches, in log order.
    let mut batched: BTreeMap<usize, Vec<(i64, &str)>> = BTreeMap::new();
    // Entered for the matching only, which does not wait; the enqueue is instrumented.
    let matching = span.enter();
    for event in &page {
        let Some(attributes) = EventAttributes::parse(&event.body) else {
            continue;
        };
        let subject = attributes.subject_key();
        for i in index.candidates(attributes.resource.as_deref(), subject.as_deref()) {
            let target = &index.targets[i];
            if event.seq > target.start_seq
                && target.matcher.matches(&attributes)
                && visibility
                    .entry(target.principal)
                    // Where access is decided per event, each delivery is decided when sent.
                    .or_insert_with(|| authorizer.candidates(&index.principals[target.principal]))
                    .covers(subject.as_deref(), attributes.resource.as_deref())
            {
                if target.batching.batches() {
                    batched.entry(i).or_default().push((event.seq, &event.id));
                    continue;
                }
                deliveries.push(NewDelivery {
                    subscription_id: target.id,
                    event_seq: Some(event.seq),
                    event_id: event.id.clone(),
                    webhook_id: crate::signing::new_webhook_id(),
                    // Read from the event when leased: the queue keeps no copy.
                    body: None,
                    batch: None,
                });
                delivery_targets.push(i);
            }
        }
    }
    drop(matching);
    if authorizer.decides_per_event() {
        // Nothing is queued that the subscriber may not read: no delivery row (and no id in
        // its deliveries listing) for an event it must not learn of.
        let permitted = decide_page(
            &page,
            &index,
            &deliveries,
            &delivery_targets,
            &batched,
            authorizer,
        )
        .instrument(span.clone())
        .await?;
        let mut targets = delivery_targets.iter();
        deliveries.retain(|d| {
            let principal = targets.next().map(|i| index.targets[*i].principal);
            principal.is_some_and(|p| d.event_seq.is_some_and(|seq| permitted.contains(&(p, seq))))
        });
        for (i, events) in batched.iter_mut() {
            let p = index.targets[*i].principal;
            events.retain(|(seq, _)| permitted.contains(&(p, *seq)));
        }
        batched.retain(|_, events| !events.is_empty());
    }
    for (i, events) in batched {
        let target = &index.targets[i];
        let batching = target.batching;
        let size = usize::try_from(batching.max_events.max(1)).unwrap_or(usize::MAX);
        for chunk in events.chunks(size) {
            let Some(&(first_seq, first_id)) = chunk.first() else {
                continue;
            };
            deliveries.push(NewDelivery {
                subscription_id: target.id,
                event_seq: Some(first_seq),
                event_id: first_id.to_owned(),
                webhook_id: crate::signing::new_webhook_id(),
                body: None,
                batch: Some(BatchOf {
                    seqs: chunk.iter().map(|(seq, _)| *seq).collect(),
                    batching,
                }),
            });
        }
    }
    position.index = Some(index);
    let queued = deliveries.len();
    span.record(
        "hendelse.deliveries",
        i64::try_from(queued).unwrap_or(i64::MAX),
    );
    if deliveries.is_empty() {
        position.matched = last;
        // Under steady publishing pages keep coming, so this is where the position is stored.
        if position.persist_due() {
            persist(position, push).await?;
        }
        return Ok(Some(0));
    }
    let moved = advance(position, push, persisted, last, &deliveries)
        .instrument(span)
        .await?;
    if moved {
        metrics::counter!("hendelse_deliveries_queued_total").increment(queued as u64);
    }
    Ok(Some(if moved { queued } else { 0 }))
}

/// Which (subscriber, event) pairs of the page's candidates the decision point permits, asked
/// once per subscriber for all its candidates of the page.
async fn decide_page(
    page: &[hendelse_store::StoredEvent],
    index: &Index,
    deliveries: &[NewDelivery],
    delivery_targets: &[usize],
    batched: &BTreeMap<usize, Vec<(i64, &str)>>,
    authorizer: &dyn Authorizer,
) -> Result<HashSet<(usize, i64)>, DecisionError> {
    let mut asked: BTreeMap<usize, BTreeSet<i64>> = BTreeMap::new();
    for (delivery, i) in deliveries.iter().zip(delivery_targets) {
        if let Some(seq) = delivery.event_seq {
            asked
                .entry(index.targets[*i].principal)
                .or_default()
                .insert(seq);
        }
    }
    for (i, events) in batched {
        let seqs = asked.entry(index.targets[*i].principal).or_default();
        seqs.extend(events.iter().map(|(seq, _)| *seq));
    }
    let facts: HashMap<i64, EventFacts> = page
        .iter()
        .map(|e| (e.seq, EventFacts::of_json(&e.body).unwrap_or_default()))
        .collect();
    let mut permitted = HashSet::new();
    for (principal, seqs) in asked {
        let seqs: Vec<i64> = seqs.into_iter().collect();
        let list: Vec<EventFacts> = seqs
            .iter()
            .map(|seq| facts.get(seq).cloned().unwrap_or_default())
            .collect();
        let answers = authorizer
            .permitted(&index.principals[principal], Action::Read, &list)
            .await?;
        permitted.extend(
            seqs.into_iter()
                .zip(answers)
                .filter_map(|(seq, ok)| ok.then_some((principal, seq))),
        );
    }
    Ok(permitted)
}

/// Moves the stored position from `persisted` to `to` with `deliveries`, in one transaction. When
/// another dispatcher moved it first, nothing is written and the position is read again.
async fn advance(
    position: &mut Position,
    push: &dyn PushStore,
    persisted: i64,
    to: i64,
    deliveries: &[NewDelivery],
) -> Result<bool, StoreError> {
    let moved = push.enqueue(persisted, to, deliveries).await?;
    let index = position.index.take();
    *position = if moved {
        Position::stored_at(to)
    } else {
        Position::default()
    };
    position.index = index;
    Ok(moved)
}
