#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot open the store: {0}")]
    Open(String),
}

impl StoreError {
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
                    // SQLITE_BUSY / SQLITE_LOCKED, and PostgreSQL's connection-exception and
                    // admin-shutdown classes, too many connections, and a database that does not
                    // accept connections now (`ALLOW_CONNECTIONS false`, 55000 at connect).
                    matches!(
                        d.code().as_deref(),
                        Some("5" | "6" | "517" | "53300" | "55000" | "57P01" | "57P02" | "57P03")
                    ) || d.code().is_some_and(|c| c.starts_with("08"))
                })
            }
            StoreError::Migrate(_) | StoreError::Open(_) => false,
        }
    }
}
