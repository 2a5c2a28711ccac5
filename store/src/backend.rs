//! What every part of the store shares without depending on the connection: which backend
//! this is, and how its failures are told apart ([`DbError`], [`is_unavailable`]).

/// Which database backs this installation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL through postgres-es.
    Postgres,
    /// SQLite through sqlite-es (the embedded default).
    Sqlite,
}

/// A database failure (connection, migration, query). Details are for logs, not for clients.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported DATABASE_URL {0:?}: expected postgres://… or sqlite://…")]
    UnsupportedUrl(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl DbError {
    /// Whether this failure is the database being unreachable or overloaded rather than a
    /// fault of the request or the data (see [`is_unavailable`]): worth retrying later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Sqlx(e) if is_unavailable(e))
    }
}

/// Whether `e` means "the database cannot serve this now, try again later": no connection
/// within the acquire timeout (which is how a refused connection ends: sqlx retries it until
/// then), the connection failed or was cut (I/O, TLS), or PostgreSQL refused for a transient
/// reason (SQLSTATE class 08 connection exception, 53 insufficient resources, 57P01–57P03
/// shutdown or starting up, 57014 statement timeout, 40001/40P01 serialization failure or
/// deadlock). Anything else (a constraint, bad SQL, a decode error) is a bug or bad data.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            let code = code.as_ref();
            code.starts_with("08")
                || code.starts_with("53")
                || matches!(code, "57P01" | "57P02" | "57P03" | "57014" | "40001" | "40P01")
        }),
        _ => false,
    }
}
