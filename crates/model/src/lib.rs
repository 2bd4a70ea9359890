//! The CloudEvents model of Hendelse: validation of incoming events, the `%` wildcard patterns of
//! queries and subscriptions, party subjects, and what a reader is allowed to see.

pub mod cloudevent;
pub mod dialogporten;
pub mod pattern;
pub mod subject;
pub mod trace;
pub mod visibility;

pub use cloudevent::{FieldError, ValidatedEvent, ValidationError, validate_event};
pub use pattern::Pattern;
pub use visibility::{Grant, Visibility};

/// Largest accepted event (and request body), in bytes.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Prefix every generic event's `resource` attribute must carry.
pub const RESOURCE_PREFIX: &str = "urn:altinn:resource:";
