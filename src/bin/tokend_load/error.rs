//! The profiler's error type: every failure carries a sentence saying what
//! was being done.

use std::fmt;

/// A failure of the profiler (not of a single measured request: those are
/// counted, not raised).
#[derive(Debug)]
pub struct LoadError {
    /// What went wrong, with context.
    message: String,
}

impl LoadError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LoadError {}

/// The profiler's result type.
pub type Result<T, E = LoadError> = std::result::Result<T, E>;

/// Adds context to any displayable error.
pub trait Context<T> {
    /// Maps the error to a [`LoadError`] reading "`what`: `error`".
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| LoadError::new(format!("{}: {e}", what())))
    }
}
