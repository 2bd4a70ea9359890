//! Storage of the dialog service: dialogs (as JSON documents with the columns they are found by),
//! their seen log, and the outbox of events that each change writes in the same transaction. The
//! SQL is written once (`$n` placeholders work on SQLite too) and instantiated per backend by
//! [`impl_dialog_store`]. Changes are compare-and-swap on the dialog's revision, so concurrent
//! writers never lose each other's changes.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hendelse_model::Visibility;

use crate::StoreError;

/// One dialog as the store keeps it. The columns are what dialogs are found and compared by; the
/// document is the dialog itself, which only the dialog service interprets.
#[derive(Debug, Clone, PartialEq)]
pub struct DialogRecord {
    /// Position in listing order, assigned by the store (ignored when writing).
    pub seq: i64,
    pub id: String,
    pub resource: String,
    /// The party as a subject key (`hendelse_model::subject::party_key`).
    pub subject_key: String,
    pub status: String,
    pub revision: String,
    /// The last change that was not silent: what a seen-log entry refers to.
    pub change_id: String,
    pub deleted: bool,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    pub document: String,
}

/// One event waiting in the outbox: everything its CloudEvent is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// Position in the outbox, assigned by the store (ignored when writing).
    pub seq: i64,
    pub event_id: String,
    pub event_type: String,
    pub dialog_id: String,
    pub resource: String,
    pub subject: String,
    /// Appended to the configured source base: `/api/v1/enduser/dialogs/{id}…`.
    pub source_path: String,
    pub time: DateTime<Utc>,
    /// The event's `data`, a JSON object, or `None` for none.
    pub data: Option<String>,
}

/// One entry of a dialog's seen log.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenEntry {
    pub id: String,
    pub dialog_id: String,
    pub change_id: String,
    pub seen_by: String,
    pub seen_at: DateTime<Utc>,
}

/// Which dialogs a listing includes by their deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeletedFilter {
    #[default]
    Exclude,
    Include,
    Only,
}

/// A page of dialogs. Every filter is a conjunction; the lists match any of their values (an empty
/// list matches everything); `visibility` is applied before `limit`.
#[derive(Debug, Clone, PartialEq)]
pub struct DialogQuery {
    /// Only dialogs after this position.
    pub after: i64,
    pub resources: Vec<String>,
    pub subject_keys: Vec<String>,
    pub statuses: Vec<String>,
    pub deleted: DeletedFilter,
    pub visibility: Visibility,
    pub limit: u32,
}

impl Default for DialogQuery {
    fn default() -> Self {
        DialogQuery {
            after: 0,
            resources: Vec::new(),
            subject_keys: Vec::new(),
            statuses: Vec::new(),
            deleted: DeletedFilter::Exclude,
            visibility: Visibility::All,
            limit: 100,
        }
    }
}

/// Dialogs, their seen log and the outbox; both backends implement it with identical behaviour.
#[async_trait]
pub trait DialogStore: Send + Sync + 'static {
    /// Stores a new dialog and its events in one transaction; false (and nothing stored) when a
    /// dialog with its id exists.
    async fn insert_dialog(
        &self,
        dialog: &DialogRecord,
        events: &[OutboxEvent],
    ) -> Result<bool, StoreError>;

    async fn dialog(&self, id: &str) -> Result<Option<DialogRecord>, StoreError>;

    /// Replaces the dialog and stores the events in one transaction, if its revision is still
    /// `expected_revision`; false (and nothing stored) when it is not, or the dialog is gone.
    async fn update_dialog(
        &self,
        dialog: &DialogRecord,
        expected_revision: &str,
        events: &[OutboxEvent],
    ) -> Result<bool, StoreError>;

    /// Removes the dialog and its seen log and stores the events in one transaction, if its
    /// revision is still `expected_revision`; false (and nothing changed) otherwise.
    async fn purge_dialog(
        &self,
        id: &str,
        expected_revision: &str,
        events: &[OutboxEvent],
    ) -> Result<bool, StoreError>;

    /// The page of dialogs the query selects, in listing order.
    async fn list_dialogs(&self, query: &DialogQuery) -> Result<Vec<DialogRecord>, StoreError>;

    /// Records that `entry.seen_by` has seen change `entry.change_id` and stores the events with
    /// it, in one transaction; false (and nothing stored) when that user has already seen that
    /// change, or the dialog is no longer at that change or is deleted.
    async fn record_seen(
        &self,
        entry: &SeenEntry,
        events: &[OutboxEvent],
    ) -> Result<bool, StoreError>;

    /// The entries of a dialog's seen log that refer to `change_id`, oldest first.
    async fn seen_log(
        &self,
        dialog_id: &str,
        change_id: &str,
    ) -> Result<Vec<SeenEntry>, StoreError>;

    /// Up to `limit` outbox events, oldest first.
    async fn outbox(&self, limit: u32) -> Result<Vec<OutboxEvent>, StoreError>;

    /// Removes forwarded events from the outbox; returns how many were removed.
    async fn outbox_done(&self, seqs: &[i64]) -> Result<u64, StoreError>;

    /// Events waiting in the outbox and the time of the oldest.
    async fn outbox_depth(&self) -> Result<(u64, Option<DateTime<Utc>>), StoreError>;
}

pub(crate) const DIALOG_COLUMNS: &str = "seq, id, resource, subject_key, status, revision, \
     change_id, deleted, created, updated, document";

pub(crate) const OUTBOX_COLUMNS: &str =
    "seq, event_id, event_type, dialog_id, resource, subject, source_path, time, data";

/// Implements [`DialogStore`] for a backend: `$store` with pools `$read`/`$write` of database
/// `$db`, `$dialect` the [`crate::sql::Dialect`] of its filters.
macro_rules! impl_dialog_store {
    ($store:ty, $db:ty, read: $read:ident, write: $write:ident, dialect: $dialect:expr) => {
        impl $store {
            fn dialog_from(
                row: &<$db as sqlx::Database>::Row,
            ) -> Result<$crate::dialog::DialogRecord, $crate::StoreError> {
                use sqlx::Row;
                Ok($crate::dialog::DialogRecord {
                    seq: row.try_get("seq")?,
                    id: row.try_get("id")?,
                    resource: row.try_get("resource")?,
                    subject_key: row.try_get("subject_key")?,
                    status: row.try_get("status")?,
                    revision: row.try_get("revision")?,
                    change_id: row.try_get("change_id")?,
                    deleted: row.try_get("deleted")?,
                    created: $crate::micros_to_time(row.try_get("created")?),
                    updated: $crate::micros_to_time(row.try_get("updated")?),
                    document: row.try_get("document")?,
                })
            }

            async fn insert_outbox(
                tx: &mut <$db as sqlx::Database>::Connection,
                events: &[$crate::dialog::OutboxEvent],
            ) -> Result<(), $crate::StoreError> {
                // A change writes a handful of events: one statement each keeps it simple.
                for e in events {
                    sqlx::query(
                        "INSERT INTO dialog_outbox (event_id, event_type, dialog_id, resource, \
                         subject, source_path, time, data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(&e.event_id)
                    .bind(&e.event_type)
                    .bind(&e.dialog_id)
                    .bind(&e.resource)
                    .bind(&e.subject)
                    .bind(&e.source_path)
                    .bind(e.time.timestamp_micros())
                    .bind(&e.data)
                    .execute(&mut *tx)
                    .await?;
                }
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::dialog::DialogStore for $store {
            async fn insert_dialog(
                &self,
                d: &$crate::dialog::DialogRecord,
                events: &[$crate::dialog::OutboxEvent],
            ) -> Result<bool, $crate::StoreError> {
                let mut tx = self.begin_write().await?;
                let inserted = sqlx::query(
                    "INSERT INTO dialogs (id, resource, subject_key, status, revision, change_id, \
                     deleted, created, updated, document) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING",
                )
                .bind(&d.id)
                .bind(&d.resource)
                .bind(&d.subject_key)
                .bind(&d.status)
                .bind(&d.revision)
                .bind(&d.change_id)
                .bind(d.deleted)
                .bind(d.created.timestamp_micros())
                .bind(d.updated.timestamp_micros())
                .bind(&d.document)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if inserted == 0 {
                    return Ok(false);
                }
                Self::insert_outbox(&mut tx, events).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn dialog(
                &self,
                id: &str,
            ) -> Result<Option<$crate::dialog::DialogRecord>, $crate::StoreError> {
                let sql = format!(
                    "SELECT {} FROM dialogs WHERE id = $1",
                    $crate::dialog::DIALOG_COLUMNS
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id.to_owned())
                    .fetch_optional(&self.$read)
                    .await?;
                row.as_ref().map(Self::dialog_from).transpose()
            }

            async fn update_dialog(
                &self,
                d: &$crate::dialog::DialogRecord,
                expected_revision: &str,
                events: &[$crate::dialog::OutboxEvent],
            ) -> Result<bool, $crate::StoreError> {
                let mut tx = self.begin_write().await?;
                let updated = sqlx::query(
                    "UPDATE dialogs SET status = $3, revision = $4, change_id = $5, deleted = $6, \
                     updated = $7, document = $8 WHERE id = $1 AND revision = $2",
                )
                .bind(&d.id)
                .bind(expected_revision)
                .bind(&d.status)
                .bind(&d.revision)
                .bind(&d.change_id)
                .bind(d.deleted)
                .bind(d.updated.timestamp_micros())
                .bind(&d.document)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if updated == 0 {
                    return Ok(false);
                }
                Self::insert_outbox(&mut tx, events).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn purge_dialog(
                &self,
                id: &str,
                expected_revision: &str,
                events: &[$crate::dialog::OutboxEvent],
            ) -> Result<bool, $crate::StoreError> {
                let mut tx = self.begin_write().await?;
                let purged = sqlx::query("DELETE FROM dialogs WHERE id = $1 AND revision = $2")
                    .bind(id.to_owned())
                    .bind(expected_revision.to_owned())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if purged == 0 {
                    return Ok(false);
                }
                sqlx::query("DELETE FROM dialog_seen WHERE dialog_id = $1")
                    .bind(id.to_owned())
                    .execute(&mut *tx)
                    .await?;
                Self::insert_outbox(&mut tx, events).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn list_dialogs(
                &self,
                q: &$crate::dialog::DialogQuery,
            ) -> Result<Vec<$crate::dialog::DialogRecord>, $crate::StoreError> {
                if q.visibility.is_nothing() || q.limit == 0 {
                    return Ok(Vec::new());
                }
                let mut qb: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(format!(
                    "SELECT {} FROM dialogs WHERE seq > ",
                    $crate::dialog::DIALOG_COLUMNS
                ));
                qb.push_bind(q.after);
                match q.deleted {
                    $crate::dialog::DeletedFilter::Exclude => {
                        qb.push(" AND NOT deleted");
                    }
                    $crate::dialog::DeletedFilter::Only => {
                        qb.push(" AND deleted");
                    }
                    $crate::dialog::DeletedFilter::Include => {}
                }
                for (column, values) in [
                    ("resource", &q.resources),
                    ("subject_key", &q.subject_keys),
                    ("status", &q.statuses),
                ] {
                    if values.is_empty() {
                        continue;
                    }
                    qb.push(format_args!(" AND {column} IN ("));
                    let mut list = qb.separated(", ");
                    for v in values {
                        list.push_bind(v.clone());
                    }
                    qb.push(")");
                }
                // The events' visibility filter reads the same column names.
                let visible = $crate::EventQuery {
                    visibility: q.visibility.clone(),
                    ..$crate::EventQuery::default()
                };
                if !$crate::sql::push_filters(&mut qb, &visible, $dialect) {
                    return Ok(Vec::new());
                }
                qb.push(" ORDER BY seq LIMIT ").push_bind(i64::from(q.limit));
                qb.build()
                    .fetch_all(&self.$read)
                    .await?
                    .iter()
                    .map(Self::dialog_from)
                    .collect()
            }

            async fn record_seen(
                &self,
                s: &$crate::dialog::SeenEntry,
                events: &[$crate::dialog::OutboxEvent],
            ) -> Result<bool, $crate::StoreError> {
                let mut tx = self.begin_write().await?;
                // The unique (dialog_id, change_id, seen_by) index decides between concurrent
                // readers: exactly one inserts, the others do nothing.
                let inserted = sqlx::query(
                    "INSERT INTO dialog_seen (id, dialog_id, change_id, seen_by, seen_at) \
                     SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM dialogs \
                       WHERE id = $2 AND change_id = $3 AND NOT deleted) \
                     ON CONFLICT (dialog_id, change_id, seen_by) DO NOTHING",
                )
                .bind(&s.id)
                .bind(&s.dialog_id)
                .bind(&s.change_id)
                .bind(&s.seen_by)
                .bind(s.seen_at.timestamp_micros())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if inserted == 0 {
                    return Ok(false);
                }
                Self::insert_outbox(&mut tx, events).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn seen_log(
                &self,
                dialog_id: &str,
                change_id: &str,
            ) -> Result<Vec<$crate::dialog::SeenEntry>, $crate::StoreError> {
                use sqlx::Row;
                let rows = sqlx::query(
                    "SELECT id, dialog_id, change_id, seen_by, seen_at FROM dialog_seen \
                     WHERE dialog_id = $1 AND change_id = $2 ORDER BY seen_at, id",
                )
                .bind(dialog_id.to_owned())
                .bind(change_id.to_owned())
                .fetch_all(&self.$read)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok($crate::dialog::SeenEntry {
                            id: r.try_get("id")?,
                            dialog_id: r.try_get("dialog_id")?,
                            change_id: r.try_get("change_id")?,
                            seen_by: r.try_get("seen_by")?,
                            seen_at: $crate::micros_to_time(r.try_get("seen_at")?),
                        })
                    })
                    .collect()
            }

            async fn outbox(
                &self,
                limit: u32,
            ) -> Result<Vec<$crate::dialog::OutboxEvent>, $crate::StoreError> {
                use sqlx::Row;
                let sql = format!(
                    "SELECT {} FROM dialog_outbox ORDER BY seq LIMIT $1",
                    $crate::dialog::OUTBOX_COLUMNS
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(i64::from(limit))
                    .fetch_all(&self.$read)
                    .await?;
                rows.iter()
                    .map(|r| {
                        Ok($crate::dialog::OutboxEvent {
                            seq: r.try_get("seq")?,
                            event_id: r.try_get("event_id")?,
                            event_type: r.try_get("event_type")?,
                            dialog_id: r.try_get("dialog_id")?,
                            resource: r.try_get("resource")?,
                            subject: r.try_get("subject")?,
                            source_path: r.try_get("source_path")?,
                            time: $crate::micros_to_time(r.try_get("time")?),
                            data: r.try_get("data")?,
                        })
                    })
                    .collect()
            }

            async fn outbox_done(&self, seqs: &[i64]) -> Result<u64, $crate::StoreError> {
                if seqs.is_empty() {
                    return Ok(0);
                }
                let mut qb: sqlx::QueryBuilder<$db> =
                    sqlx::QueryBuilder::new("DELETE FROM dialog_outbox WHERE seq IN (");
                let mut list = qb.separated(", ");
                for seq in seqs {
                    list.push_bind(*seq);
                }
                qb.push(")");
                // In a synced transaction of its own: a lost delete would relay these again.
                let mut tx = self.begin_write().await?;
                let done = qb.build().execute(&mut *tx).await?.rows_affected();
                tx.commit().await?;
                Ok(done)
            }

            async fn outbox_depth(
                &self,
            ) -> Result<(u64, Option<chrono::DateTime<chrono::Utc>>), $crate::StoreError> {
                use sqlx::Row;
                let row = sqlx::query("SELECT count(*) AS n, min(time) AS oldest FROM dialog_outbox")
                    .fetch_one(&self.$read)
                    .await?;
                let n: i64 = row.try_get("n")?;
                let oldest: Option<i64> = row.try_get("oldest")?;
                Ok((u64::try_from(n).unwrap_or(0), oldest.map($crate::micros_to_time)))
            }
        }
    };
}

pub(crate) use impl_dialog_store;
