//! The event store: one [`EventStore`] interface with a SQLite and a PostgreSQL backend, and the
//! group-committing [`Ingest`] writer in front of it.

pub mod dialog;
mod error;
mod ingest;
pub mod nodelay;
pub mod postgres;
pub mod push;
mod query;
mod retention;
mod sql;
pub mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use dialog::DialogStore;
pub use error::StoreError;
pub use ingest::{Ingest, IngestConfig, IngestError, WriteFault, WriteHealth};
pub use push::PushStore;
pub use query::{EventQuery, IndexedAttributes};

/// An event ready to be stored: its indexed attributes and its JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub id: String,
    pub source: String,
    pub event_type: String,
    pub subject_key: Option<String>,
    pub alternative_subject: Option<String>,
    pub resource: Option<String>,
    pub body: String,
    /// The W3C `traceparent` of the request that published it, sent with its deliveries.
    pub traceparent: Option<String>,
}

impl From<hendelse_model::ValidatedEvent> for NewEvent {
    fn from(e: hendelse_model::ValidatedEvent) -> Self {
        let subject_key = e.subject_key();
        NewEvent {
            id: e.id,
            source: e.source,
            event_type: e.event_type,
            subject_key,
            alternative_subject: e.alternative_subject,
            resource: e.resource,
            body: e.json,
            traceparent: None,
        }
    }
}

/// A stored event as a reader gets it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: i64,
    pub id: String,
    pub registered: DateTime<Utc>,
    pub body: String,
}

/// What one committed append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AppendReceipt {
    /// Events newly stored (duplicates of stored `source` + `id` are not counted).
    pub inserted: u64,
    /// The highest sequence number in the store after the commit.
    pub last_seq: i64,
}

/// The storage interface both backends implement with identical behaviour.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Stores the events in one durable transaction; events whose `source` + `id` is already stored
    /// are skipped. Returns only after the commit is durable.
    async fn append(&self, events: &[NewEvent]) -> Result<AppendReceipt, StoreError>;

    /// The page of events matching `query`, in registration order.
    async fn query(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError>;

    /// The position of the event with this id among the events `query` selects (ignoring its
    /// position bounds and limit), or `None` when there is no such event.
    async fn position_of(&self, id: &str, query: &EventQuery) -> Result<Option<i64>, StoreError>;

    /// Deletes events registered before `cutoff`; returns how many were deleted.
    async fn delete_registered_before(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError>;

    /// The highest sequence number stored so far (0 for an empty store).
    async fn last_seq(&self) -> Result<i64, StoreError>;

    /// Whether the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// A small durable write that stores nothing of anyone's (one row of `write_probe`), to learn
    /// whether the store takes writes again after it could not (a full disk).
    async fn probe_write(&self) -> Result<(), StoreError>;

    /// Whether the group-commit writer should run on a thread of its own. Only for a backend whose
    /// I/O does not depend on the main runtime's reactor (SQLite's connections have worker
    /// threads; PostgreSQL's sockets belong to the runtime that opened them).
    fn writer_wants_own_thread(&self) -> bool {
        false
    }
}

/// Everything a backend stores: the event log, the push queue and the dialogs.
pub trait Store: EventStore + PushStore + DialogStore {}

impl<T: EventStore + PushStore + DialogStore> Store for T {}

/// Opens the store a deployment names: PostgreSQL when `database_url` is given, otherwise the
/// SQLite file in `data_dir`.
pub async fn open(
    database_url: Option<&str>,
    data_dir: &std::path::Path,
) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    Ok(match database_url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            std::sync::Arc::new(postgres::PgStore::connect(url).await?)
        }
        Some(other) => {
            return Err(StoreError::Open(format!(
                "unsupported database URL scheme in '{}': use postgres://",
                other.split(':').next().unwrap_or_default()
            )));
        }
        None => std::sync::Arc::new(sqlite::SqliteStore::open(data_dir).await?),
    })
}

pub(crate) fn micros_to_time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}
