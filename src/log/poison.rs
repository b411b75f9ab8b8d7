//! The one record of a log's failure.
//!
//! After a failed fsync the kernel may have dropped the dirty pages, and a
//! retry could report success for data that is gone; after a refused append
//! memory holds a change the log does not. Either way nothing written since
//! the last good fsync may be acknowledged, ever: the log is poisoned. This
//! cell is set once, with the first cause, and read wherever a write is
//! refused — by the deciders before they change state, by appends, and by
//! durability waits.

use super::LogError;
use std::sync::{Arc, OnceLock};

/// Set once when the log fails; never cleared (a restart recovers).
#[derive(Debug, Default)]
pub struct Poison {
    /// The first failure.
    cause: OnceLock<Arc<str>>,
}

impl Poison {
    /// Poisons the log with `cause`, unless it already was; returns whether
    /// this call did (so the failure is logged once).
    pub fn set(&self, cause: impl std::fmt::Display) -> bool {
        let mut first = false;
        self.cause.get_or_init(|| {
            first = true;
            Arc::from(cause.to_string())
        });
        first
    }

    /// `Err(Poisoned)` once the log is poisoned. One atomic load otherwise.
    pub fn check(&self) -> Result<(), LogError> {
        match self.cause.get() {
            None => Ok(()),
            Some(cause) => Err(LogError::Poisoned {
                cause: Arc::clone(cause),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_cause_wins_and_stays() {
        let poison = Poison::default();
        assert_eq!(poison.check(), Ok(()));
        assert!(poison.set("fsync failed"));
        assert!(!poison.set("write failed"));
        assert_eq!(
            poison.check(),
            Err(LogError::Poisoned {
                cause: Arc::from("fsync failed")
            })
        );
    }
}
