//! Live streams of the query routes as `text/event-stream`: the same filters and authorization as
//! the queries, each event as one message whose `id` is the event id. A client that reconnects
//! with `Last-Event-ID` resumes right after that event; without a starting point a stream begins
//! at the end of the log. New events go out as soon as they are committed on this node (and within
//! the tip poll interval when another node committed them). A stream reads the store only to catch
//! up; after that the node's one live tail hands it what it selects (`crate::live`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use hendelse_store::{EventQuery, EventStore, StoredEvent};
use tokio::sync::watch;

use crate::app::AppState;
use crate::live::{LiveTail, Registration};
use crate::openapi::pages::EventStream;
use crate::openapi::params::{
    AppFilters, AppSubject, EventFilters, GenericSubject, Resource, Resume,
};
use crate::openapi::problems::{BadRequest, Refusals};
use crate::params;
use crate::problem::ApiError;
use crate::routes::query::{self, Reading, Start};

/// Events read per store query while catching up.
const CHUNK: u32 = 500;
/// How long a quiet stream waits before it looks again on its own.
const IDLE_RECHECK: Duration = Duration::from_secs(5);

/// `GET /events/api/v1/events/stream`
#[utoipa::path(
    get,
    operation_id = "streamEvents",
    path = "/events/api/v1/events/stream",
    tag = crate::openapi::EVENTS,
    description = "Live stream of the /events query; starts at the end of the log unless after, from or Last-Event-ID say otherwise.",
    params(
        Resource,
        Resume,
        EventFilters,
        GenericSubject
    ),
    responses(
        EventStream, BadRequest, Refusals
    ),
    security(("bearer" = []))
)]
pub async fn generic(
    State(state): State<AppState>,
    reading: Reading,
) -> Result<Response, ApiError> {
    let query = query::generic_query(&state, &reading, Start::Optional)?;
    open(state, &reading, query).await
}

/// `GET /events/api/v1/app/party/stream`
#[utoipa::path(
    get,
    operation_id = "streamPartyEvents",
    path = "/events/api/v1/app/party/stream",
    tag = crate::openapi::EVENTS,
    description = "Live stream of the /app/party query.",
    params(
        Resume,
        AppFilters,
        AppSubject
    ),
    responses(
        EventStream, BadRequest, Refusals
    ),
    security(("bearer" = []))
)]
pub async fn app_party(
    State(state): State<AppState>,
    reading: Reading,
) -> Result<Response, ApiError> {
    let query = query::app_party_query(&state, &reading, Start::Optional)?;
    open(state, &reading, query).await
}

async fn open(
    state: AppState,
    reading: &Reading,
    mut query: EventQuery,
) -> Result<Response, ApiError> {
    let Reading {
        params, headers, ..
    } = reading;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let cursor = match (last_event_id, params.one("after")?) {
        (Some(id), _) => state.events.position(Some(id), None, &query).await?,
        (None, Some(after)) => {
            let after_source = params.one(params::AFTER_SOURCE)?;
            state
                .events
                .position(Some(after), after_source, &query)
                .await?
        }
        // `from` alone replays from that time; nothing at all means "from now on".
        (None, None) if query.from.is_some() => 0,
        (None, None) => *state.tip.borrow(),
    };
    query.limit = CHUNK;
    let authorizer = state.events.authorizer();
    let follower = Follower {
        store: state.store.clone(),
        live: state.live.clone(),
        access: Access {
            // Decided again before the first read: a reload between the route's restriction
            // and now would otherwise go unseen.
            generation: u64::MAX,
            authorizer,
            caller: reading.caller.clone(),
        },
        query,
        cursor,
        registration: None,
        caught_up: false,
        tip: state.tip.clone(),
        stopping: state.stopping.clone(),
        buffer: VecDeque::new(),
        _client: state.metrics.stream_client(),
    };
    let stream = futures_util::stream::unfold(follower, |mut f| async move {
        let event = f.next().await?;
        Some((Ok::<_, Infallible>(message(&event)), f))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// One stream: it reads the store from its cursor until it has caught up with the node's live
/// tail (`crate::live`), then takes the events the tail hands it.
struct Follower {
    store: Arc<dyn EventStore>,
    live: LiveTail,
    /// Decided again when the access rules change (a reloaded registry): a revoked grant stops
    /// an open stream's next event.
    access: Access,
    query: EventQuery,
    /// The last position this stream has read through.
    cursor: i64,
    /// Joined before the store read that catches up, so nothing committed meanwhile is missed.
    registration: Option<Registration>,
    /// The store has been read up to where the tail took over.
    caught_up: bool,
    tip: watch::Receiver<i64>,
    stopping: watch::Receiver<bool>,
    buffer: VecDeque<StoredEvent>,
    _client: crate::metrics::StreamClient,
}

/// Who follows, and by which rules as of which generation.
struct Access {
    authorizer: Arc<dyn hendelse_auth::Authorizer>,
    caller: hendelse_auth::Principal,
    generation: u64,
}

impl Follower {
    /// The next event, waiting for one to be committed; `None` ends the stream (the server is
    /// stopping, or the store failed: the client reconnects with `Last-Event-ID`, losing nothing).
    async fn next(&mut self) -> Option<StoredEvent> {
        loop {
            if *self.stopping.borrow() {
                return None;
            }
            if let Some(event) = self.buffer.pop_front() {
                return Some(event);
            }
            let generation = self.access.authorizer.generation();
            if generation != self.access.generation {
                crate::events::restrict(
                    self.access.authorizer.as_ref(),
                    &self.access.caller,
                    &mut self.query,
                );
                self.access.generation = generation;
                // The tail must test the new query: catch up under it from the cursor.
                self.leave_tail();
            }
            if self.caught_up {
                self.follow_tail().await;
                continue;
            }
            if self.registration.is_none() {
                self.registration = self.live.register(&self.query);
            }
            let page = EventQuery {
                after: self.cursor,
                ..self.query.clone()
            };
            // Mark the tip as seen before reading, so a commit during the read wakes us again.
            self.tip.borrow_and_update();
            let events = match self.store.query(&page).await {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(error = %e, "a live stream ends: the store failed");
                    return None;
                }
            };
            let short = events.len() < CHUNK as usize;
            let Some(last) = events.last().map(|e| e.seq) else {
                if self.registration.is_some() {
                    self.caught_up = true;
                } else {
                    self.wait_for_tip().await;
                }
                continue;
            };
            if self.show(events, last).await && short && self.registration.is_some() {
                self.caught_up = true;
            }
        }
    }

    /// Takes the next event the tail hands this stream, or learns that it must catch up again.
    async fn follow_tail(&mut self) {
        let Some(registration) = self.registration.as_mut() else {
            self.caught_up = false;
            return;
        };
        tokio::select! {
            handed = registration.queue.recv() => match handed {
                Some(live) if live.event.seq <= self.cursor => {}
                // The tail tested the query of the old rules: read it again under the new ones.
                Some(_) if self.access.authorizer.generation() != self.access.generation => {
                    self.leave_tail();
                }
                Some(live) => {
                    let seq = live.event.seq;
                    if !self.show(vec![live.event.clone()], seq).await {
                        // Not decided: read it again from the store.
                        self.leave_tail();
                    }
                }
                // Fell a whole queue behind and was dropped: catch up from the store.
                None => self.leave_tail(),
            },
            _ = self.stopping.changed() => {}
            // Look at the access rules again now and then on a quiet stream.
            _ = tokio::time::sleep(IDLE_RECHECK) => {}
        }
    }

    /// Queues what the caller may read of `events`, read through `last`; false when the decision
    /// point did not answer (nothing is shown undecided, and the cursor stays).
    async fn show(&mut self, events: Vec<StoredEvent>, last: i64) -> bool {
        match crate::events::readable(self.access.authorizer.as_ref(), &self.access.caller, events)
            .await
        {
            Ok(readable) => {
                self.cursor = last;
                self.buffer.extend(readable);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "a live stream waits for the authorization decision point");
                tokio::time::sleep(Duration::from_secs(1)).await;
                false
            }
        }
    }

    fn leave_tail(&mut self) {
        self.registration = None;
        self.caught_up = false;
    }

    /// Without the tail (it has not read the end of the log yet): wait for a commit.
    async fn wait_for_tip(&mut self) {
        tokio::select! {
            changed = self.tip.changed() => {
                if changed.is_err() {
                    tokio::time::sleep(IDLE_RECHECK).await;
                }
            }
            _ = self.stopping.changed() => {}
            _ = tokio::time::sleep(IDLE_RECHECK) => {}
        }
    }
}

/// One SSE message. Line breaks in the stored JSON can only be whitespace between tokens (inside
/// strings they are escaped), so they become spaces: one `data:` line, the same JSON.
fn message(event: &StoredEvent) -> Event {
    let data = if event.body.contains(['\n', '\r']) {
        event.body.replace(['\n', '\r'], " ")
    } else {
        event.body.clone()
    };
    let message = Event::default().data(data);
    if event.id.contains(['\n', '\r', '\0']) {
        message
    } else {
        message.id(event.id.clone())
    }
}
