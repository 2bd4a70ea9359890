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
