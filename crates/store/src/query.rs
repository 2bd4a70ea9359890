use chrono::{DateTime, Utc};
use hendelse_model::{Pattern, Visibility};

/// A page request against the store. Every filter is a conjunction; `sources` and `types` match if
/// any of their patterns does; `visibility` is applied before `limit`, so a page is short only at
/// the end of the log.
#[derive(Debug, Clone, PartialEq)]
pub struct EventQuery {
    /// Only events with a sequence number above this.
    pub after: i64,
    /// Registered at or after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Registered at or before this instant.
    pub to: Option<DateTime<Utc>>,
    pub subject_key: Option<String>,
    pub alternative_subject: Option<String>,
    pub resource: Option<String>,
    /// Resource must start with this (case-sensitive), e.g. `urn:altinn:resource:app_` for app events.
    pub resource_prefix: Option<String>,
    pub sources: Vec<Pattern>,
    pub types: Vec<Pattern>,
    pub visibility: Visibility,
    pub limit: u32,
}

impl Default for EventQuery {
    fn default() -> Self {
        EventQuery {
            after: 0,
            from: None,
            to: None,
            subject_key: None,
            alternative_subject: None,
            resource: None,
            resource_prefix: None,
            sources: Vec::new(),
            types: Vec::new(),
            visibility: Visibility::All,
            limit: 50,
        }
    }
}

/// The attributes of a stored event that a query's filters test, read once from its JSON so that
/// many queries can be tested against one event in memory (the live streams of a node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedAttributes {
    pub source: String,
    pub event_type: String,
    /// The subject as the store indexes it ([`hendelse_model::subject::party_key`]).
    pub subject_key: Option<String>,
    pub alternative_subject: Option<String>,
    pub resource: Option<String>,
}

impl IndexedAttributes {
    /// Read as the validator read the event when it was published (a repeated key: the last
    /// one); `None` only for text that is no event object, which the store never holds.
    pub fn of(event: &crate::StoredEvent) -> Option<IndexedAttributes> {
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&event.body).ok()?;
        let text = |name: &str| map.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        Some(IndexedAttributes {
            source: text("source")?,
            event_type: text("type")?,
            subject_key: text("subject")
                .as_deref()
                .map(hendelse_model::subject::party_key),
            alternative_subject: text("alternativesubject"),
            resource: text("resource"),
        })
    }
}

impl EventQuery {
    /// Whether the store would select an event with these attributes, registered at `registered`,
    /// ignoring `after` and `limit`: the same filters as its SQL. (`source` and `type` patterns
    /// fold case as [`Pattern::matches`] does, all of Unicode, where SQLite's `LIKE` folds ASCII.)
    pub fn matches(&self, event: &IndexedAttributes, registered: DateTime<Utc>) -> bool {
        let equal = |filter: &Option<String>, value: &Option<String>| {
            filter.is_none() || filter.as_deref() == value.as_deref()
        };
        equal(&self.subject_key, &event.subject_key)
            && equal(&self.alternative_subject, &event.alternative_subject)
            && equal(&self.resource, &event.resource)
            && self.resource_prefix.as_deref().is_none_or(|prefix| {
                event
                    .resource
                    .as_deref()
                    .is_some_and(|r| r.starts_with(prefix))
            })
            && (self.sources.is_empty() || self.sources.iter().any(|p| p.matches(&event.source)))
            && (self.types.is_empty() || self.types.iter().any(|p| p.matches(&event.event_type)))
            && self
                .visibility
                .covers(event.subject_key.as_deref(), event.resource.as_deref())
            // In whole microseconds, as the store keeps and compares registration times.
            && self
                .from
                .is_none_or(|from| registered.timestamp_micros() >= from.timestamp_micros())
            && self
                .to
                .is_none_or(|to| registered.timestamp_micros() <= to.timestamp_micros())
    }
}
