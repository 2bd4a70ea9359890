//! SQL shared by both backends: every filter of [`EventQuery`] as bound parameters (never text
//! from a request spliced into SQL).

use std::borrow::Cow;

use hendelse_model::Visibility;
use hendelse_model::visibility::ResourceScope;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, SqlSafeStr};
use sqlx::{Database, Encode, QueryBuilder, Type};

use crate::EventQuery;

/// Where the backends spell things differently.
#[derive(Clone, Copy)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Case-insensitive `LIKE` (SQLite's `LIKE` already ignores ASCII case).
    fn like(self) -> &'static str {
        match self {
            Dialect::Sqlite => "LIKE",
            Dialect::Postgres => "ILIKE",
        }
    }
}

/// Appends ` AND …` for every filter of the query except its position bounds and limit.
/// Returns false when the query can match nothing (the reader may see nothing).
pub(crate) fn push_filters<DB>(qb: &mut QueryBuilder<DB>, q: &EventQuery, dialect: Dialect) -> bool
where
    DB: Database,
    for<'a> String: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
{
    if let Some(s) = &q.subject_key {
        qb.push(" AND subject_key = ").push_bind(s.clone());
    }
    if let Some(s) = &q.alternative_subject {
        qb.push(" AND alternative_subject = ").push_bind(s.clone());
    }
    if let Some(r) = &q.resource {
        qb.push(" AND resource = ").push_bind(r.clone());
    }
    if let Some(p) = &q.resource_prefix {
        qb.push(" AND ");
        push_starts_with(qb, dialect, "resource", p);
    }
    for (column, patterns) in [("source", &q.sources), ("type", &q.types)] {
        if patterns.is_empty() {
            continue;
        }
        qb.push(" AND (");
        for (i, p) in patterns.iter().enumerate() {
            if i > 0 {
                qb.push(" OR ");
            }
            qb.push(format_args!("{column} {} ", dialect.like()))
                .push_bind(p.to_like());
            qb.push(" ESCAPE '\\'");
        }
        qb.push(")");
    }
    match &q.visibility {
        Visibility::All => true,
        Visibility::Grants(grants) if grants.is_empty() => false,
        Visibility::Grants(grants) => {
            qb.push(" AND (");
            for (i, g) in grants.iter().enumerate() {
                if i > 0 {
                    qb.push(" OR ");
                }
                qb.push("(1 = 1");
                if let Some(subjects) = &g.subjects {
                    push_in(qb, "subject_key", subjects);
                }
                if let ResourceScope::Some { exact, prefixes } = &g.resources {
                    qb.push(" AND (1 = 0");
                    for r in exact {
                        qb.push(" OR resource = ").push_bind(r.clone());
                    }
                    for p in prefixes {
                        qb.push(" OR ");
                        push_starts_with(qb, dialect, "resource", p);
                    }
                    qb.push(")");
                }
                qb.push(")");
            }
            qb.push(")");
            true
        }
    }
}

/// The position bounds: ` WHERE seq > …` from `after` and `from`, and ` AND seq <= …` from `to`.
/// `from`/`to` become a sequence range found through the commits table: registration times never
/// go backwards, so the first commit at or after `from` holds the smallest position and the last
/// at or before `to` the largest, one index probe each.
pub(crate) fn push_position_bounds<DB>(qb: &mut QueryBuilder<DB>, q: &EventQuery, dialect: Dialect)
where
    DB: Database,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
{
    qb.push(" WHERE seq > ");
    match (q.from, dialect) {
        // SQLite ranges an index on one lower bound and tests any other row by row, so `after`
        // and `from` are folded into one; a page in the middle of a large store otherwise cost
        // every earlier entry of its resource. (Its two-argument max is NULL when a commit at or
        // after `from` does not exist, which matches nothing, as it should.)
        (Some(from), Dialect::Sqlite) => {
            qb.push("max(")
                .push_bind(q.after)
                .push(", (SELECT first_seq - 1 FROM commits WHERE registered >= ")
                .push_bind(from.timestamp_micros())
                .push(" ORDER BY registered, first_seq LIMIT 1))");
        }
        // PostgreSQL's B-tree keeps the tightest of several bounds on a column.
        (Some(from), Dialect::Postgres) => {
            qb.push_bind(q.after)
                .push(" AND seq >= (SELECT first_seq FROM commits WHERE registered >= ")
                .push_bind(from.timestamp_micros())
                .push(" ORDER BY registered, first_seq LIMIT 1)");
        }
        (None, _) => {
            qb.push_bind(q.after);
        }
    }
    if let Some(to) = q.to {
        qb.push(" AND seq <= (SELECT last_seq FROM commits WHERE registered <= ")
            .push_bind(to.timestamp_micros())
            .push(" ORDER BY registered DESC, first_seq DESC LIMIT 1)");
    }
}

/// A case-sensitive prefix test, which `LIKE` is not.
fn push_starts_with<DB>(qb: &mut QueryBuilder<DB>, dialect: Dialect, column: &str, prefix: &str)
where
    DB: Database,
    for<'a> String: Encode<'a, DB> + Type<DB>,
{
    match dialect {
        Dialect::Sqlite => {
            qb.push(format_args!("substr({column}, 1, length("))
                .push_bind(prefix.to_owned())
                .push(")) = ")
                .push_bind(prefix.to_owned());
        }
        Dialect::Postgres => {
            qb.push(format_args!("starts_with({column}, "))
                .push_bind(prefix.to_owned())
                .push(")");
        }
    }
}

fn push_in<DB>(qb: &mut QueryBuilder<DB>, column: &str, values: &[String])
where
    DB: Database,
    for<'a> String: Encode<'a, DB> + Type<DB>,
{
    if values.is_empty() {
        qb.push(" AND 1 = 0");
        return;
    }
    qb.push(format_args!(" AND {column} IN ("));
    let mut list = qb.separated(", ");
    for v in values {
        list.push_bind(v.clone());
    }
    qb.push(")");
}

/// The migrator of a backend's `(version, name, sql)` list.
pub(crate) fn migrator(migrations: &[(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        migrations
            .iter()
            .map(|(version, name, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*name),
                    MigrationType::Simple,
                    AssertSqlSafe(*sql).into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// The page query of `q` (after `prefix`, e.g. `EXPLAIN `): one index read in `seq` order.
pub(crate) fn select<DB>(dialect: Dialect, prefix: &str, q: &EventQuery) -> QueryBuilder<DB>
where
    DB: Database,
    for<'a> String: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new(prefix);
    qb.push("SELECT seq, id, registered, body FROM events");
    if let Dialect::Sqlite = dialect {
        // With a cursor deep in the log SQLite's planner tends to walk the primary key from the
        // cursor and filter, which costs the rest of the log; the shape's own index (ending in
        // seq) costs one page.
        if let Some(index) = sqlite_index(q) {
            qb.push(format_args!(" INDEXED BY {index}"));
        }
    }
    push_position_bounds(&mut qb, q, dialect);
    if !push_filters(&mut qb, q, dialect) {
        qb.push(" AND 1 = 0");
    }
    qb.push(" ORDER BY seq LIMIT ")
        .push_bind(i64::from(q.limit));
    qb
}

/// The index that serves a query shape in `seq` order, most selective first.
fn sqlite_index(q: &EventQuery) -> Option<&'static str> {
    if q.subject_key.is_some() {
        Some("events_subject")
    } else if q.alternative_subject.is_some() {
        Some("events_alternative_subject")
    } else if q.resource.is_some() {
        Some("events_resource")
    } else {
        None
    }
}
