//! The log seam: how a decider (a shard, the catalog) makes its changes
//! durable, and how the answers that depend on them learn when they are.
//!
//! A decider applies a command in memory and [`Log::append`]s its record in
//! the same step, so the log's order is the decision order; it never waits
//! for the disk and does no I/O of its own. Whoever answers the client
//! awaits [`Log::durable`] for the LSN the answer depends on. Once any
//! append or write fails, the log is *poisoned* ([`Poison`]): nothing more
//! is acknowledged, and deciders check [`Log::check_writable`] before they
//! change anything.
//!
//! - [`record`]: what one logged change is, and its versioned encoding;
//! - [`poison`]: the one cell that says the log failed, and why;
//! - [`Durable`]: the wait for an LSN.
//!
//! The local write-ahead log ([`crate::wal::Wal`]) implements the seam; a
//! replicated log can implement it too, with no change to its users.

pub mod poison;
pub mod record;

pub use poison::Poison;
pub use record::LogRecord;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::oneshot;

/// Log sequence number. Records are numbered 1, 2, 3, … without gaps; 0
/// means "before the first record".
pub type Lsn = u64;

/// Why the log will not acknowledge a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// A write, an fsync or an append failed earlier: nothing more is
    /// acknowledged until a restart recovers from what is durable.
    #[error("log poisoned by an earlier failure ({cause}); restart to recover")]
    Poisoned {
        /// The first failure.
        cause: Arc<str>,
    },
    /// The log was closed (shutdown) before the record was durable.
    #[error("log closed")]
    Closed,
    /// Another writer appended to a replicated log behind this one's back:
    /// the shard is owned elsewhere now, and this writer's records after its
    /// last acknowledged one were never appended.
    #[error("fenced: {cause}")]
    Fenced {
        /// What showed it.
        cause: Arc<str>,
    },
    /// A wait for an LSN that was never appended (a programming error).
    #[error("LSN {lsn} was never appended (next LSN is {next_lsn})")]
    NotAppended {
        /// The LSN asked for.
        lsn: Lsn,
        /// The next LSN to be assigned.
        next_lsn: Lsn,
    },
}

/// A durable, ordered log of [`LogRecord`]s: what a decider needs, and no
/// more.
pub trait Log: Send + Sync + 'static {
    /// Records `record` after every record appended before it and returns
    /// its LSN. Never waits for the disk. The caller has already applied the
    /// change, so an error poisons the log: a change that memory holds and
    /// the log does not must never be acknowledged.
    fn append(&self, record: &LogRecord) -> Result<Lsn, LogError>;

    /// Resolves once the record `lsn` (and every one before it) is durable,
    /// or fails when it never will be acknowledged. LSN 0 is durable at once.
    fn durable(&self, lsn: Lsn) -> Durable;

    /// `Err` once the log is poisoned: deciders check it before changing
    /// state, so that a poisoned engine stops changing (reads then show only
    /// what was already there).
    fn check_writable(&self) -> Result<(), LogError>;

    /// The LSN of the last record appended (0 when none).
    fn last_lsn(&self) -> Lsn;
}

/// The wait for an LSN to be durable: a future resolving to `Ok` once it is.
#[must_use = "a durability wait does nothing unless awaited"]
pub struct Durable(Wait);

/// Where a [`Durable`] stands.
enum Wait {
    /// Decided when the wait was made (durable already, or never).
    Ready(Option<Result<(), LogError>>),
    /// The log sends the outcome once it is known.
    Pending(oneshot::Receiver<Result<(), LogError>>),
    /// The log is polled for the outcome, and wakes the task when it may
    /// have changed.
    Watch(Arc<dyn DurableWatch>, Lsn),
}

/// A log whose waits poll it for their outcome instead of receiving it on a
/// channel of their own (see `wal::wake`: it wakes each thread once per
/// batch rather than each waiter).
pub trait DurableWatch: Send + Sync + 'static {
    /// `Ready` once `lsn` is durable or never will be; otherwise arranges
    /// for `cx`'s task to be woken when that may have changed.
    fn poll_durable(&self, lsn: Lsn, cx: &mut Context<'_>) -> Poll<Result<(), LogError>>;
}

impl Durable {
    /// A wait whose outcome is already known.
    pub fn ready(outcome: Result<(), LogError>) -> Self {
        Durable(Wait::Ready(Some(outcome)))
    }

    /// A wait for the outcome the log will send on the other end of a
    /// channel; a log that drops its sender without sending has closed.
    pub fn pending(outcome: oneshot::Receiver<Result<(), LogError>>) -> Self {
        Durable(Wait::Pending(outcome))
    }

    /// A wait that polls `watch` for `lsn`.
    pub fn watch(watch: Arc<dyn DurableWatch>, lsn: Lsn) -> Self {
        Durable(Wait::Watch(watch, lsn))
    }
}

impl Future for Durable {
    type Output = Result<(), LogError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            // Polled again after completion: the outcome was taken.
            Wait::Ready(outcome) => Poll::Ready(outcome.take().unwrap_or(Err(LogError::Closed))),
            Wait::Pending(outcome) => Pin::new(outcome)
                .poll(cx)
                .map(|sent| sent.unwrap_or(Err(LogError::Closed))),
            Wait::Watch(watch, lsn) => watch.poll_durable(*lsn, cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[test]
    fn a_wait_resolves_with_what_the_log_sends_or_closed_when_it_sends_nothing() {
        assert_eq!(Durable::ready(Ok(())).now_or_never(), Some(Ok(())));
        let (tx, rx) = oneshot::channel();
        let mut wait = Durable::pending(rx);
        assert_eq!((&mut wait).now_or_never(), None);
        let cause: Arc<str> = Arc::from("disk full");
        tx.send(Err(LogError::Poisoned {
            cause: Arc::clone(&cause),
        }))
        .unwrap();
        assert_eq!(wait.now_or_never(), Some(Err(LogError::Poisoned { cause })));
        let (tx, rx) = oneshot::channel::<Result<(), LogError>>();
        drop(tx);
        assert_eq!(
            Durable::pending(rx).now_or_never(),
            Some(Err(LogError::Closed))
        );
    }
}
