//! Live streams of the query routes as `text/event-stream`: the same filters and authorization as
//! the queries, each event as one message whose `id` is the event id. A client that reconnects
//! with `Last-Event-ID` resumes right after that event; without a starting point a stream begins
//! at the end of the log. New events go out as soon as they are committed on this node (and within
//! the tip poll interval when another node committed them).

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
        access: Access {
            // Decided again before the first read: a reload between the route's restriction
            // and now would otherwise go unseen.
            generation: u64::MAX,
            authorizer,
            caller: reading.caller.clone(),
        },
        query,
        cursor,
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

struct Follower {
    store: Arc<dyn EventStore>,
    /// Decided again when the access rules change (a reloaded registry): a revoked grant stops
    /// an open stream's next event.
    access: Access,
    query: EventQuery,
    cursor: i64,
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
            }
            let page = EventQuery {
                after: self.cursor,
                ..self.query.clone()
            };
            // Mark the tip as seen before reading, so a commit during the read wakes us again.
            self.tip.borrow_and_update();
            match self.store.query(&page).await {
                Ok(events) => {
                    if let Some(last) = events.last().map(|e| e.seq) {
                        match crate::events::readable(
                            self.access.authorizer.as_ref(),
                            &self.access.caller,
                            events,
                        )
                        .await
                        {
                            Ok(readable) => {
                                self.cursor = last;
                                self.buffer.extend(readable);
                            }
                            // Nothing is shown undecided: the same events are read again.
                            Err(e) => {
                                tracing::warn!(error = %e, "a live stream waits for the authorization decision point");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                        continue;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a live stream ends: the store failed");
                    return None;
                }
            }
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
