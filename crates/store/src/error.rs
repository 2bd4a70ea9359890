#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot open the store: {0}")]
    Open(String),
    /// Refused without trying: the store could not be reached a moment ago and has not answered
    /// the writer's probe since.
    #[error("the store cannot be reached ({0})")]
    Unreachable(String),
}

impl StoreError {
    /// Whether the write failed for want of space: SQLite's `SQLITE_FULL` (its unix VFS reports
    /// `ENOSPC` as that), PostgreSQL's `disk_full` (53100), or `ENOSPC`/`EDQUOT` from the socket or
    /// file layer. Nothing of the write was stored, and the cure is space, not a retry right away.
    pub fn is_storage_full(&self) -> bool {
        match self {
            StoreError::Database(e) => match e {
                sqlx::Error::Io(io) => matches!(io.raw_os_error(), Some(28 | 122)),
                _ => e
                    .as_database_error()
                    .is_some_and(|d| matches!(d.code().as_deref(), Some("13" | "53100"))),
            },
            StoreError::Migrate(_) | StoreError::Open(_) | StoreError::Unreachable(_) => false,
        }
    }

    /// SQLite's `SQLITE_BUSY` or `SQLITE_LOCKED` (and its shared-cache form).
    pub fn is_busy(&self) -> bool {
        matches!(self, StoreError::Database(e) if e
            .as_database_error()
            .is_some_and(|d| matches!(d.code().as_deref(), Some("5" | "6" | "517"))))
    }

    /// Whether the failure is about reaching the database rather than about the request, so that
    /// callers can answer "try again" instead of "broken".
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(e) => {
                matches!(
                    e,
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::WorkerCrashed
                        | sqlx::Error::Tls(_)
                ) || e.as_database_error().is_some_and(|d| {
                    // SQLITE_BUSY / SQLITE_LOCKED, SQLITE_IOERR and its extended codes (a write
                    // or fsync the file system refused), and PostgreSQL's connection-exception and
                    // admin-shutdown classes, too many connections, and a database that does not
                    // accept connections now (`ALLOW_CONNECTIONS false`, 55000 at connect).
                    matches!(
                        d.code().as_deref(),
                        Some("5" | "6" | "517" | "53300" | "55000" | "57P01" | "57P02" | "57P03")
                    ) || d
                        .code()
                        .is_some_and(|c| c.starts_with("08") || is_sqlite_ioerr(&c))
                })
            }
            StoreError::Unreachable(_) => true,
            StoreError::Migrate(_) | StoreError::Open(_) => false,
        }
    }
}

/// SQLite's `SQLITE_IOERR` (10) and its extended codes (`10 | n << 8`); PostgreSQL's SQLSTATEs
/// are five characters and never parse as these.
fn is_sqlite_ioerr(code: &str) -> bool {
    code.len() < 5 && code.parse::<u32>().is_ok_and(|c| c & 0xff == 10)
}

#[cfg(test)]
mod tests {
    use super::is_sqlite_ioerr;

    #[test]
    fn sqlite_io_errors_are_told_from_other_codes() {
        assert!(is_sqlite_ioerr("10"));
        assert!(is_sqlite_ioerr("778")); // SQLITE_IOERR_WRITE
        assert!(is_sqlite_ioerr("1034")); // SQLITE_IOERR_FSYNC
        assert!(!is_sqlite_ioerr("13"));
        assert!(!is_sqlite_ioerr("2067")); // SQLITE_CONSTRAINT_UNIQUE
        assert!(!is_sqlite_ioerr("53100"));
    }
}
