//! Hendelse's Dialogporten-compatible dialog service: dialogs with revisions, soft delete, restore,
//! purge, activities, transmissions and a seen log ([`service`]), in the shapes of [`model`], validated
//! as Dialogporten does ([`validate`]); each change writes Dialogporten's events to an outbox in its own transaction
//! ([`events`]), and the [`forwarder`] publishes them as CloudEvents.

mod changes;
pub mod error;
pub mod events;
pub mod forwarder;
pub mod model;
pub mod request;
pub mod service;
pub mod validate;

pub use error::DialogError;
pub use forwarder::{ForwardError, ForwarderConfig, Sink};
pub use request::{Conditions, ListParams, Precondition};
pub use service::DialogService;
