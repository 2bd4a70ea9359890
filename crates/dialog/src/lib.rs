//! Hendelse's Dialogporten-compatible dialog service: dialogs with revisions, soft delete, restore,
//! purge, activities, transmissions and a seen log ([`service`]), validated as Dialogporten does
//! ([`model`]); each change writes Dialogporten's events to an outbox in its own transaction
//! ([`events`]), and the [`forwarder`] publishes them as CloudEvents.

pub mod error;
pub mod events;
pub mod forwarder;
pub mod model;
pub mod service;

pub use error::DialogError;
pub use forwarder::{ForwardError, ForwarderConfig, Sink};
pub use service::{Conditions, DialogService, ListParams, Precondition};
