//! [`Mailbox`]: the bound on the requests one shard holds at once.
//!
//! A shard decides one message at a time. Without a bound, a burst larger
//! than the shard can decide — or a log that stalls, so that answers wait
//! for durability — would pile up futures in the HTTP workers without
//! limit, and every client would wait longer and longer. Instead each
//! request takes a slot of its shard before its first message is sent and
//! gives it back when it is answered (or dropped); when every slot is
//! taken the request is refused at once with [`EngineError::Overloaded`]
//! (503 `OVERLOADED`, `Retry-After: 1`). A refused request never reached
//! the shard, so it changed nothing and nothing of it is in the log.
//!
//! A slot covers the whole request on that shard: queued in the actor's
//! mailbox, being decided, and decided but waiting for its log records to be
//! durable. A request that spans shards (a batch create, children) takes
//! the slots of every shard it touches before sending anything, so it is
//! refused whole or not at all.

use super::EngineError;
use crate::config::SHARD_MAILBOX_MAX_LIMIT;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Messages a shard may receive beyond its counted requests: snapshot
/// captures and timer runs, which take no slot.
pub const UNCOUNTED_MESSAGES_MAX: usize = 64;

/// The slots of one shard.
#[derive(Debug)]
pub struct Mailbox {
    /// Slots taken now.
    held: AtomicUsize,
    /// Slots there are (`--shard-mailbox-max`).
    held_max: usize,
}

impl Mailbox {
    /// A mailbox of `held_max` slots.
    pub fn new(held_max: usize) -> Arc<Self> {
        assert!(
            (1..=SHARD_MAILBOX_MAX_LIMIT).contains(&held_max),
            "the mailbox bound is validated by the CLI"
        );
        Arc::new(Self {
            held: AtomicUsize::new(0),
            held_max,
        })
    }

    /// Takes a slot, or refuses with [`EngineError::Overloaded`] when all
    /// are taken. The slot is given back when the returned guard drops.
    pub fn admit(self: &Arc<Self>) -> Result<Admitted, EngineError> {
        let taken = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < self.held_max).then_some(held + 1)
            });
        match taken {
            Ok(_) => Ok(Admitted {
                mailbox: Arc::clone(self),
            }),
            Err(_) => Err(EngineError::Overloaded),
        }
    }

    /// Slots taken now (requests the shard holds).
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// Slots there are.
    pub fn held_max(&self) -> usize {
        self.held_max
    }
}

/// A slot taken in a shard's [`Mailbox`]; given back on drop.
#[derive(Debug)]
pub struct Admitted {
    /// The mailbox the slot belongs to.
    mailbox: Arc<Mailbox>,
}

impl Admitted {
    /// Whether this slot belongs to `mailbox`.
    pub fn is_of(&self, mailbox: &Arc<Mailbox>) -> bool {
        Arc::ptr_eq(&self.mailbox, mailbox)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let before = self.mailbox.held.fetch_sub(1, Ordering::AcqRel);
        assert!(before > 0, "a slot is given back once");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_bound_and_frees_on_drop() {
        let mailbox = Mailbox::new(2);
        let first = mailbox.admit().unwrap();
        let second = mailbox.admit().unwrap();
        assert_eq!(mailbox.held(), 2);
        assert_eq!(mailbox.admit().unwrap_err(), EngineError::Overloaded);
        assert_eq!(mailbox.held(), 2, "a refusal takes nothing");
        drop(first);
        assert_eq!(mailbox.held(), 1);
        let third = mailbox.admit().unwrap();
        assert!(third.is_of(&mailbox));
        assert!(!third.is_of(&Mailbox::new(1)));
        drop((second, third));
        assert_eq!(mailbox.held(), 0);
    }

    #[test]
    #[should_panic(expected = "validated by the CLI")]
    fn a_zero_bound_is_refused() {
        Mailbox::new(0);
    }
}
