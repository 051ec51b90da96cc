//! A PostgreSQL error with a SQLSTATE (and a constraint), as sqlx reports one, for the
//! tests of the blame rules.

use std::borrow::Cow;

/// A PostgreSQL error with a SQLSTATE (and a constraint), as sqlx reports one.
#[derive(Debug)]
struct PgError {
    code: &'static str,
    constraint: Option<&'static str>,
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "error {}", self.code)
    }
}

impl std::error::Error for PgError {}

impl sqlx::error::DatabaseError for PgError {
    fn message(&self) -> &str {
        self.code
    }
    fn code(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(self.code))
    }
    fn constraint(&self) -> Option<&str> {
        self.constraint
    }
    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }
    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }
    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }
    fn kind(&self) -> sqlx::error::ErrorKind {
        sqlx::error::ErrorKind::Other
    }
}

/// `code` as a `sqlx::Error`.
pub(crate) fn pg_error(code: &'static str, constraint: Option<&'static str>) -> sqlx::Error {
    sqlx::Error::Database(Box::new(PgError { code, constraint }))
}
