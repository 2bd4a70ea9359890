//! The events service, between the publish and query routes and the store: who may publish for a
//! resource, what the server adds to an app event, and how a reader's cursor resolves to a
//! position in the log and to the `next` cursor of a page. The routes parse HTTP (content modes,
//! query strings, headers) and render; the rules are here.

use std::sync::Arc;
use tracing::Instrument;

use chrono::{SecondsFormat, Utc};
use hendelse_auth::{
    Action, Authorizer, DecisionError, EventFacts, Principal, SCOPE_PUBLISH, SCOPE_PUBLISH_ADMIN,
    SCOPE_SUBSCRIBE,
};
use hendelse_model::cloudevent::validate_map;
use hendelse_model::subject::is_digits;
use hendelse_model::{Pattern, RESOURCE_PREFIX, ValidatedEvent, ValidationError, Visibility};
use hendelse_store::{
    EventQuery, EventStore, Ingest, IngestError, NewEvent, StoreError, StoredEvent,
};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Every way an events request can fail; the server renders each as problem details.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The events are not valid (400, with the field errors).
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The authorization decision point did not answer: nothing is permitted meanwhile.
    #[error(transparent)]
    Decision(#[from] DecisionError),
    /// An event the server built or stored cannot be rendered or read back: a fault of ours.
    #[error("{what}")]
    Internal {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

/// One page of a query and the cursor that continues right after it.
pub struct Page {
    pub events: Vec<StoredEvent>,
    /// The `after` of the next page: the last event's id, or the request's own at the end.
    pub next_after: String,
    /// The `afterSource` beside it, when the id alone would not resume right after that event.
    pub next_source: Option<String>,
}

/// An app event the server stored: its new id, and the app it belongs to.
pub struct PublishedApp {
    pub id: String,
    pub org: String,
    pub app: String,
}

pub struct EventService {
    store: Arc<dyn EventStore>,
    ingest: Ingest,
    authorizer: Arc<dyn Authorizer>,
}

impl EventService {
    pub fn new(
        store: Arc<dyn EventStore>,
        ingest: Ingest,
        authorizer: Arc<dyn Authorizer>,
    ) -> Self {
        EventService {
            store,
            ingest,
            authorizer,
        }
    }

    /// Stores `events` all or nothing once the caller may publish each for its resource; returns
    /// when they are durable. `batch` says how errors name an event (`[2].resource`).
    pub async fn publish(
        &self,
        caller: &Principal,
        events: Vec<ValidatedEvent>,
        batch: bool,
        traceparent: Option<&str>,
    ) -> Result<usize, EventError> {
        require_publish_scope(caller)?;
        for (i, event) in events.iter().enumerate() {
            let field = if batch {
                format!("[{i}].resource")
            } else {
                "resource".to_owned()
            };
            self.authorize_resource(caller, event, &field)?;
        }
        self.authorize_publish(caller, &events.iter().collect::<Vec<_>>())
            .await?;
        let count = events.len();
        if count > 0 {
            self.ingest
                .publish(
                    events
                        .into_iter()
                        .map(|e| traced(NewEvent::from(e), traceparent))
                        .collect(),
                )
                .instrument(crate::telemetry::commit_span(count))
                .await?;
            metrics::counter!("hendelse_events_published_total", "endpoint" => "events")
                .increment(count as u64);
        }
        Ok(count)
    }

    /// Whether the caller may publish at all; checked before the body is read.
    pub fn may_publish(&self, caller: &Principal) -> Result<(), EventError> {
        require_publish_scope(caller)
    }

    fn authorize_resource(
        &self,
        caller: &Principal,
        event: &ValidatedEvent,
        field: &str,
    ) -> Result<(), EventError> {
        match &event.resource {
            // Only an administrator may publish events outside every resource (such as the plain
            // conformance vectors); nobody but administrators can read them.
            None if caller.has_scope(SCOPE_PUBLISH_ADMIN) => Ok(()),
            None => Err(ValidationError::single(
                field,
                format!("is required and must start with {RESOURCE_PREFIX}"),
            )
            .into()),
            Some(r) if !r.starts_with(RESOURCE_PREFIX) => Err(ValidationError::single(
                field,
                format!("must start with {RESOURCE_PREFIX}"),
            )
            .into()),
            Some(_) => Ok(()),
        }
    }

    /// Refuses the publish unless the caller may publish every one of `events`, asked together.
    async fn authorize_publish(
        &self,
        caller: &Principal,
        events: &[&ValidatedEvent],
    ) -> Result<(), EventError> {
        let facts: Vec<EventFacts> = events
            .iter()
            .map(|e| EventFacts {
                resource: e.resource.clone(),
                subject: e.subject.clone(),
                source: Some(e.source.clone()),
                event_type: Some(e.event_type.clone()),
                resource_instance: e.resource_instance.clone(),
            })
            .collect();
        let permitted = self
            .authorizer
            .permitted(caller, Action::Publish, &facts)
            .await?;
        match events.iter().zip(permitted).find(|(_, ok)| !ok) {
            // Without a resource only an administrator publishes (checked with the shape).
            Some((event, _)) if event.resource.is_none() => Ok(()),
            Some((event, _)) => Err(EventError::Forbidden(format!(
                "the caller may not publish events for the resource {}",
                event.resource.as_deref().unwrap_or_default()
            ))),
            None => Ok(()),
        }
    }

    /// An app event: the server assigns `id` and `time` and derives `resource` and
    /// `resourceinstance` from `source`, which must be an instance of one of the caller's apps.
    /// Returns the new event's id once it is durable.
    pub async fn publish_app(
        &self,
        caller: &Principal,
        mut event: Map<String, Value>,
        traceparent: Option<&str>,
    ) -> Result<PublishedApp, EventError> {
        require_publish_scope(caller)?;
        let source = event
            .get("source")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let app = AppSource::parse(&source).ok_or_else(|| {
            ValidationError::single(
                "source",
                "must be https://{org}.apps.{host}/{org}/{app}/instances/{partyId}/{instanceGuid}",
            )
        })?;
        if caller.org() != Some(app.org.as_str()) && !caller.has_scope(SCOPE_PUBLISH_ADMIN) {
            return Err(EventError::Forbidden(format!(
                "only the org '{}' may publish events for its apps",
                app.org
            )));
        }
        check_app_subjects(&event, &app)?;
        let id = uuid::Uuid::new_v4().to_string();
        event.entry("specversion").or_insert_with(|| "1.0".into());
        event.insert("id".into(), Value::String(id.clone()));
        event.insert(
            "time".into(),
            Value::String(Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)),
        );
        event.insert(
            "resource".into(),
            Value::String(format!("{RESOURCE_PREFIX}app_{}_{}", app.org, app.app)),
        );
        event.insert(
            "resourceinstance".into(),
            Value::String(format!("{}/{}", app.party_id, app.instance)),
        );
        let json = serde_json::to_string(&event).map_err(|source| EventError::Internal {
            what: "cannot render the app event".into(),
            source,
        })?;
        let validated = validate_map(&event, json)?;
        self.ingest
            .publish(vec![traced(NewEvent::from(validated), traceparent)])
            .instrument(crate::telemetry::commit_span(1))
            .await?;
        metrics::counter!("hendelse_events_published_total", "endpoint" => "app").increment(1);
        Ok(PublishedApp {
            id,
            org: app.org,
            app: app.app,
        })
    }

    /// Whether the caller may query generic events (`/events`, which wants the subscribe scope;
    /// the `/app` routes want only grants that cover the events); checked before the query
    /// string is.
    pub fn may_query_resources(&self, caller: &Principal) -> Result<(), EventError> {
        if caller.has_scope(SCOPE_SUBSCRIBE) {
            Ok(())
        } else {
            Err(EventError::Forbidden(format!(
                "the token lacks the scope {SCOPE_SUBSCRIBE}"
            )))
        }
    }

    /// Restricts `query` to what `caller` may read. Authorization is a filter the store applies
    /// before it limits the page, so a page is short only at the end of the log. Only the grants
    /// that can matter for the query's subject are kept, so that a party the reader may not read
    /// costs nothing.
    pub fn restrict(&self, caller: &Principal, query: &mut EventQuery) {
        restrict(self.authorizer.as_ref(), caller, query);
    }

    /// What decides access, for those that decide again when it changes (open streams).
    pub fn authorizer(&self) -> Arc<dyn Authorizer> {
        self.authorizer.clone()
    }

    /// One page of `query` (already restricted) after the event `after` names, with the cursor
    /// of the next page.
    /// `next` follows the last event read, also when the caller may not read it (a decision per
    /// event can leave a page shorter than its size, as in Altinn).
    pub async fn page(
        &self,
        caller: &Principal,
        mut query: EventQuery,
        after: Option<&str>,
        after_source: Option<&str>,
    ) -> Result<Page, EventError> {
        query.after = self.position(after, after_source, &query).await?;
        let events = self.store.query(&query).await?;
        let (next_after, next_source) = match events.last() {
            Some(last) => (last.id.clone(), self.source_for_next(last, &query).await?),
            None => (
                after.unwrap_or("0").to_owned(),
                after_source.map(str::to_owned),
            ),
        };
        let events = readable(self.authorizer.as_ref(), caller, events).await?;
        Ok(Page {
            events,
            next_after,
            next_source,
        })
    }

    /// The event `id` among those `query` (already restricted) selects, if the caller may read
    /// it.
    pub async fn one(
        &self,
        caller: &Principal,
        id: &str,
        query: EventQuery,
    ) -> Result<Option<StoredEvent>, EventError> {
        let Some(seq) = self.store.position_of(id, &query).await? else {
            return Ok(None);
        };
        let found = self
            .store
            .query(&EventQuery {
                after: seq - 1,
                limit: 1,
                ..query
            })
            .await?;
        let found = readable(self.authorizer.as_ref(), caller, found).await?;
        Ok(found.into_iter().find(|e| e.seq == seq && e.id == id))
    }

    /// Where reading starts: after the event `after` (with `afterSource`) names, or the start.
    pub async fn position(
        &self,
        after: Option<&str>,
        after_source: Option<&str>,
        query: &EventQuery,
    ) -> Result<i64, EventError> {
        match (after, after_source) {
            (None, _) | (Some("0"), None) => Ok(0),
            (Some(id), source) => self.resolve_after(id, source, query).await,
        }
    }

    /// The position of the event `after` names. Ids are unique per source, not globally: with the
    /// source that `next` adds when the id is shared (`afterSource`) the event is found exactly;
    /// otherwise it is looked up among those the query selects first, then anywhere. An id that
    /// is not (or no longer, after retention) in the store reads from the start, as Altinn does.
    async fn resolve_after(
        &self,
        id: &str,
        source: Option<&str>,
        query: &EventQuery,
    ) -> Result<i64, EventError> {
        if let Some(source) = source {
            // A `%` in the source widens the match; the earliest candidate means at worst a
            // repeat.
            let pinned = EventQuery {
                sources: vec![Pattern::new(source)],
                ..query.clone()
            };
            if let Some(seq) = self.store.position_of(id, &pinned).await? {
                return Ok(seq);
            }
        }
        if let Some(seq) = self.store.position_of(id, query).await? {
            return Ok(seq);
        }
        let anywhere = EventQuery {
            visibility: Visibility::All,
            ..EventQuery::default()
        };
        Ok(self.store.position_of(id, &anywhere).await?.unwrap_or(0))
    }

    /// The source of the page's last event, for `next` to name beside `after` when the id alone
    /// would not resume right after that event: when an earlier event in the query's scope has
    /// the same id (ids are unique per source only), or when the id is `0` (which alone means the
    /// start of the log). Without it a client following `next` would get the same events again
    /// and again.
    async fn source_for_next(
        &self,
        last: &StoredEvent,
        query: &EventQuery,
    ) -> Result<Option<String>, EventError> {
        if last.id != "0" && self.store.position_of(&last.id, query).await? == Some(last.seq) {
            return Ok(None);
        }
        #[derive(Deserialize)]
        struct Source {
            source: String,
        }
        let event: Source =
            serde_json::from_str(&last.body).map_err(|source| EventError::Internal {
                what: format!("stored event {} has no source", last.seq),
                source,
            })?;
        Ok(Some(event.source))
    }
}

/// The event with the request's `traceparent`, to go with its deliveries.
fn traced(mut event: NewEvent, traceparent: Option<&str>) -> NewEvent {
    event.traceparent = traceparent.map(str::to_owned);
    event
}

fn require_publish_scope(caller: &Principal) -> Result<(), EventError> {
    if caller.has_scope(SCOPE_PUBLISH) || caller.has_scope(SCOPE_PUBLISH_ADMIN) {
        Ok(())
    } else {
        Err(EventError::Forbidden(format!(
            "the token lacks the scope {SCOPE_PUBLISH}"
        )))
    }
}

/// An app event is about the party of its instance, and its alternative subject (if any) is a
/// person or an organisation.
fn check_app_subjects(event: &Map<String, Value>, app: &AppSource) -> Result<(), EventError> {
    match event.get("subject").and_then(Value::as_str) {
        Some(s) if s == format!("/party/{}", app.party_id) => {}
        _ => {
            return Err(ValidationError::single(
                "subject",
                format!("must be /party/{} (the party in source)", app.party_id),
            )
            .into());
        }
    }
    if let Some(alt) = event.get("alternativesubject").and_then(Value::as_str) {
        let ok = alt
            .strip_prefix("/person/")
            .is_some_and(|p| is_digits(p, 11))
            || alt
                .strip_prefix("/organisation/")
                .is_some_and(|o| is_digits(o, 9));
        if !ok {
            return Err(ValidationError::single(
                "alternativesubject",
                "must be /person/{11 digits} or /organisation/{9 digits}",
            )
            .into());
        }
    }
    Ok(())
}

/// The parts of an app instance URL.
#[derive(Debug, PartialEq, Eq)]
struct AppSource {
    org: String,
    app: String,
    party_id: i64,
    instance: String,
}

impl AppSource {
    fn parse(source: &str) -> Option<AppSource> {
        let rest = source.strip_prefix("https://")?;
        let (host, path) = rest.split_once('/')?;
        let host_org = host.split('.').next()?;
        let mut segments = path.split('/');
        let org = segments.next()?;
        let app = segments.next()?;
        if segments.next()? != "instances" {
            return None;
        }
        let party_id = segments.next()?.parse().ok()?;
        let instance = segments.next()?;
        let plain = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if segments.next().is_some()
            || host_org != org
            || !host.contains(".apps.")
            || !plain(org)
            || !plain(app)
            || !plain(instance)
        {
            return None;
        }
        Some(AppSource {
            org: org.to_owned(),
            app: app.to_owned(),
            party_id,
            instance: instance.to_owned(),
        })
    }
}

/// Restricts `query` to what `caller` may read now (or, where access is decided per event, to
/// the candidates that [`readable`] then decides).
pub fn restrict(authorizer: &dyn Authorizer, caller: &Principal, query: &mut EventQuery) {
    query.visibility = authorizer.candidates(caller);
    if let Some(subject) = &query.subject_key {
        query.visibility = query.visibility.restricted_to_subject(subject);
    }
}

/// The events of `events` (candidates read with [`restrict`]) that `caller` may read: all of
/// them where access is decided by grants, else those a decision per event permits, asked
/// together for the page.
pub async fn readable(
    authorizer: &dyn Authorizer,
    caller: &Principal,
    events: Vec<StoredEvent>,
) -> Result<Vec<StoredEvent>, DecisionError> {
    if events.is_empty() || !authorizer.decides_per_event() {
        return Ok(events);
    }
    let facts: Vec<EventFacts> = events
        .iter()
        .map(|e| EventFacts::of_json(&e.body).unwrap_or_default())
        .collect();
    let permitted = authorizer.permitted(caller, Action::Read, &facts).await?;
    Ok(events
        .into_iter()
        .zip(permitted)
        .filter_map(|(event, ok)| ok.then_some(event))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::AppSource;

    #[test]
    fn app_sources() {
        let s = AppSource::parse("https://ttd.apps.altinn.no/ttd/app-1/instances/50002598/3ebaa1a2-9113-4905-ab26-a84fc3ec8acc")
            .expect("valid");
        assert_eq!(
            (s.org.as_str(), s.app.as_str(), s.party_id),
            ("ttd", "app-1", 50002598)
        );
        assert!(AppSource::parse("https://ttd.apps.altinn.no/skd/app/instances/1/x").is_none());
        assert!(AppSource::parse("http://ttd.apps.altinn.no/ttd/app/instances/1/x").is_none());
        assert!(AppSource::parse("https://ttd.apps.altinn.no/ttd/app/instances/x/y").is_none());
    }
}
