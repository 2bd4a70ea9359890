//! The node's one reader of new events for all its live streams. Each stream used to query the
//! store itself on every commit, which costs a query per stream per commit: with thousands of
//! streams that is the whole database's capacity. Here one task reads each new event once, reads
//! its indexed attributes once, and hands it only to the streams whose query selects it, found
//! through an index on the subject and the resource.
//!
//! A stream joins the tail with its query first, then reads the store itself from its cursor to
//! the end (catching up), then takes what the tail hands it, skipping what it has already read:
//! whatever was committed before it joined, its own read finds; whatever after, the tail hands it. Each stream has
//! a bounded queue: a stream that falls that far behind (its client reads too slowly) is dropped
//! from the tail and catches up from the store again, so the tail never waits for a client and
//! never buffers without limit.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hendelse_store::{EventQuery, EventStore, IndexedAttributes, StoredEvent};
use tokio::sync::{mpsc, watch};

/// Events read per store query by the tail.
const PAGE: u32 = 500;
/// Events one stream may have waiting before it is dropped back to catching up from the store:
/// two pages, so that a stream whose client keeps up never overflows on one large commit.
pub const STREAM_QUEUE: usize = 2 * PAGE as usize;
/// How long the tail waits after a failed read before it tries again.
const RETRY: Duration = Duration::from_millis(500);

/// A new event with its attributes, shared by every stream it goes to.
pub struct LiveEvent {
    pub event: StoredEvent,
    attributes: IndexedAttributes,
}

/// The shared tail: clone it into every stream.
#[derive(Clone, Default)]
pub struct LiveTail {
    inner: Arc<Mutex<Followers>>,
}

#[derive(Default)]
struct Followers {
    /// The tail has read where the log ended when it started; before that nobody can join.
    started: bool,
    next_id: u64,
    entries: HashMap<u64, Entry>,
    by_subject: HashMap<String, HashSet<u64>>,
    by_resource: HashMap<String, HashSet<u64>>,
    /// Streams whose query names neither a subject nor a resource: tested against every event.
    unindexed: HashSet<u64>,
}

struct Entry {
    query: EventQuery,
    queue: mpsc::Sender<Arc<LiveEvent>>,
}

/// Where a stream's query is indexed.
enum Key {
    Subject(String),
    Resource(String),
    None,
}

fn key(query: &EventQuery) -> Key {
    match (&query.subject_key, &query.resource) {
        (Some(subject), _) => Key::Subject(subject.clone()),
        (None, Some(resource)) => Key::Resource(resource.clone()),
        (None, None) => Key::None,
    }
}

/// One stream's place in the tail; dropping it leaves the tail.
pub struct Registration {
    tail: LiveTail,
    id: u64,
    /// Every event the tail reads after the moment of joining that the query selects, in order.
    pub queue: mpsc::Receiver<Arc<LiveEvent>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.tail.lock().remove(self.id);
    }
}

impl LiveTail {
    fn lock(&self) -> MutexGuard<'_, Followers> {
        // A panic while holding the lock leaves the maps consistent (every change is one
        // insert or remove), so a poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Joins the tail with `query` (its position bounds and limit are ignored); `None` until
    /// the tail has read where the log ends, when the stream keeps reading the store itself.
    pub fn register(&self, query: &EventQuery) -> Option<Registration> {
        let (sender, queue) = mpsc::channel(STREAM_QUEUE);
        let mut followers = self.lock();
        if !followers.started {
            return None;
        }
        let id = followers.next_id;
        followers.next_id += 1;
        match key(query) {
            Key::Subject(s) => followers.by_subject.entry(s).or_default().insert(id),
            Key::Resource(r) => followers.by_resource.entry(r).or_default().insert(id),
            Key::None => followers.unindexed.insert(id),
        };
        followers.entries.insert(
            id,
            Entry {
                query: query.clone(),
                queue: sender,
            },
        );
        followers.count();
        drop(followers);
        Some(Registration {
            tail: self.clone(),
            id,
            queue,
        })
    }

    /// Reads every event committed after `start` as the tip moves, and hands each to the streams
    /// that select it; runs for the life of the node.
    pub async fn run(self, store: Arc<dyn EventStore>, start: i64, mut tip: watch::Receiver<i64>) {
        self.lock().started = true;
        // However the tail ends (the node stopping, a panic), its streams must not wait on it:
        // each goes back to reading the store itself.
        let _stopped = Stopped(self.clone());
        let mut position = start;
        loop {
            tip.borrow_and_update();
            let page = EventQuery {
                after: position,
                limit: PAGE,
                ..EventQuery::default()
            };
            match store.query(&page).await {
                Ok(events) if events.is_empty() => {
                    if tip.changed().await.is_err() {
                        return;
                    }
                }
                Ok(events) => {
                    let full = events.len() == PAGE as usize;
                    position = events.last().map_or(position, |e| e.seq);
                    self.hand_out(events);
                    if !full {
                        // Wait for the next commit, unless one came during the read.
                        if !tip.has_changed().unwrap_or(false) && tip.changed().await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the live tail cannot read the store; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    fn hand_out(&self, events: Vec<StoredEvent>) {
        let mut followers = self.lock();
        // A stream refused one event takes no later one: it would show the later one and move its
        // cursor past the refused one, which its catch-up would then never read.
        let mut overflowed = HashSet::new();
        for event in events {
            let Some(attributes) = IndexedAttributes::of(&event) else {
                // Never stored (the store holds validated events); should it happen, the store's
                // own query decides, so every stream reads the store again from its cursor.
                tracing::error!(seq = event.seq, "a stored event is not an event object");
                followers.leave_all();
                return;
            };
            let live = Arc::new(LiveEvent { event, attributes });
            let candidates = live
                .attributes
                .subject_key
                .as_ref()
                .and_then(|s| followers.by_subject.get(s))
                .into_iter()
                .chain(
                    live.attributes
                        .resource
                        .as_ref()
                        .and_then(|r| followers.by_resource.get(r)),
                )
                .flatten()
                .chain(followers.unindexed.iter());
            for id in candidates {
                if overflowed.contains(id) {
                    continue;
                }
                let Some(entry) = followers.entries.get(id) else {
                    continue;
                };
                if !entry.query.matches(&live.attributes, live.event.registered) {
                    continue;
                }
                if entry.queue.try_send(live.clone()).is_err() {
                    overflowed.insert(*id);
                }
            }
        }
        // Dropping its sender ends the stream's queue once it has taken what is in it; the
        // stream then catches up from the store and registers again.
        for id in overflowed {
            followers.remove(id);
            metrics::counter!("hendelse_stream_overflows_total").increment(1);
        }
    }
}

/// Ends the tail's followers when the tail ends.
struct Stopped(LiveTail);

impl Drop for Stopped {
    fn drop(&mut self) {
        let mut followers = self.0.lock();
        followers.started = false;
        followers.leave_all();
    }
}

impl Followers {
    /// Drops every stream from the tail: each catches up from the store and joins again.
    fn leave_all(&mut self) {
        self.entries.clear();
        self.by_subject.clear();
        self.by_resource.clear();
        self.unindexed.clear();
        self.count();
    }

    fn count(&self) {
        metrics::gauge!("hendelse_stream_tail_followers").set(self.entries.len() as f64);
    }

    fn remove(&mut self, id: u64) {
        let Some(entry) = self.entries.remove(&id) else {
            return;
        };
        self.count();
        let drop_from = |map: &mut HashMap<String, HashSet<u64>>, name: &str| {
            if let Some(ids) = map.get_mut(name) {
                ids.remove(&id);
                if ids.is_empty() {
                    map.remove(name);
                }
            }
        };
        match key(&entry.query) {
            Key::Subject(s) => drop_from(&mut self.by_subject, &s),
            Key::Resource(r) => drop_from(&mut self.by_resource, &r),
            Key::None => {
                self.unindexed.remove(&id);
            }
        }
    }
}
