//! Durability waits woken once per batch per thread.
//!
//! A waiter on an async worker thread (an actix arbiter: every HTTP worker
//! and shard thread) does not get a channel of its own. It registers its
//! task's waker in its thread's [`ThreadWaiters`] list, and the writer
//! thread, after each batch, wakes one task per thread — that thread's
//! *drainer* — which wakes the waiters the batch covers there. Waking a task
//! from another thread costs a system call (the runtime's event fd) and
//! often a context switch; waking one on its own thread is a queue push. So
//! a batch of a hundred redeems parsed on one worker costs that worker one
//! wake-up instead of a hundred.
//!
//! A wait resolves by reading the WAL's state itself (the durable LSN, the
//! poison, whether the writer has stopped), so a wake-up only says "look
//! again" and a spurious one is harmless. Waits anywhere else (a plain tokio
//! runtime, a thread without one) keep a channel each, as before.
//!
//! Ordering: the writer stores the durable LSN, then reads each thread's
//! lowest awaited LSN; a waiter stores its LSN into the lowest, then reads
//! the durable LSN. Both sequentially consistent, so either the waiter sees
//! its LSN durable, or the writer sees the waiter and wakes its thread.

use super::writer::Shared;
use crate::log::{LogError, Lsn};
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};

/// No waiter on the thread.
const NONE_WAITING: Lsn = Lsn::MAX;

/// A thread's waiters as the writer thread sees them.
pub(super) struct ThreadWaiters {
    /// The lowest LSN a waiter on the thread awaits ([`NONE_WAITING`]: none):
    /// the writer wakes the thread once the durable LSN reaches it.
    lowest_lsn: AtomicU64,
    /// The thread's drainer task.
    drainer: AtomicWaker,
}

/// The threads with waiters of one WAL.
#[derive(Default)]
pub(super) struct Threads {
    /// One entry per thread that has waited; removed when its drainer ends.
    threads: Mutex<Vec<Arc<ThreadWaiters>>>,
    /// Threads woken because a batch covered one of their waiters, for
    /// [`super::WalStats::thread_wakes`].
    wakes: AtomicU64,
}

impl Threads {
    /// Threads woken so far because a batch covered one of their waiters.
    pub(super) fn wakes(&self) -> u64 {
        self.wakes.load(Ordering::Relaxed)
    }

    /// After the durable LSN moved to `durable`: wakes each thread with a
    /// waiter it covers, once.
    pub(super) fn wake_covered(&self, durable: Lsn) {
        for thread in self.threads.lock().iter() {
            if thread.lowest_lsn.load(Ordering::SeqCst) <= durable {
                thread.drainer.wake();
                self.wakes.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The WAL failed or stopped: wakes every thread, whose waiters then
    /// learn why.
    pub(super) fn wake_all(&self) {
        for thread in self.threads.lock().iter() {
            thread.drainer.wake();
        }
    }
}

/// One thread's waiters of one WAL, as the thread keeps them.
struct Local {
    /// The WAL (its writer's shared state); compared by address.
    wal: Weak<Shared>,
    /// What the writer thread reads.
    shared: Arc<ThreadWaiters>,
    /// `(lsn, task)` of each wait registered on this thread and not yet
    /// woken; mostly in LSN order, drained by the drainer.
    waiting: RefCell<Vec<(Lsn, Waker)>>,
}

thread_local! {
    /// This thread's waiter lists, one per WAL it waited on.
    static LOCALS: RefCell<Vec<Rc<Local>>> = const { RefCell::new(Vec::new()) };
}

/// Whether waits on this thread can use the per-thread list: it runs a
/// local task set that the drainer can be spawned on (an actix arbiter).
pub(super) fn available() -> bool {
    actix_rt::Arbiter::try_current().is_some()
}

/// Polls the wait for `lsn` on `wal`: resolved from the WAL's state, or
/// registered on this thread's list (starting its drainer on first use).
pub(super) fn poll_durable(
    wal: &Shared,
    lsn: Lsn,
    cx: &mut Context<'_>,
) -> Poll<Result<(), LogError>> {
    if let Some(outcome) = wal.outcome(lsn) {
        return Poll::Ready(outcome);
    }
    let Some(local) = local_for(wal) else {
        // The WAL is being dropped: nothing will be acknowledged.
        return Poll::Ready(Err(LogError::Closed));
    };
    local.waiting.borrow_mut().push((lsn, cx.waker().clone()));
    let lowest = local.shared.lowest_lsn.load(Ordering::SeqCst);
    if lsn < lowest {
        local.shared.lowest_lsn.store(lsn, Ordering::SeqCst);
    }
    // Read again after the store: see the module doc.
    match wal.outcome(lsn) {
        Some(outcome) => Poll::Ready(outcome),
        None => Poll::Pending,
    }
}

/// This thread's list for `wal`, made (and its drainer spawned) on first
/// use; `None` once the WAL is being dropped.
fn local_for(wal: &Shared) -> Option<Rc<Local>> {
    LOCALS.with(|locals| {
        let mut locals = locals.borrow_mut();
        if let Some(local) = locals.iter().find(|l| std::ptr::eq(l.wal.as_ptr(), wal)) {
            return Some(Rc::clone(local));
        }
        let wal = wal.me.upgrade()?;
        let shared = Arc::new(ThreadWaiters {
            lowest_lsn: AtomicU64::new(NONE_WAITING),
            drainer: AtomicWaker::new(),
        });
        wal.threads.threads.lock().push(Arc::clone(&shared));
        let local = Rc::new(Local {
            wal: Arc::downgrade(&wal),
            shared,
            waiting: RefCell::new(Vec::new()),
        });
        locals.push(Rc::clone(&local));
        actix_rt::spawn(drain(wal, Rc::clone(&local)));
        Some(local)
    })
}

/// The thread's drainer: each time the writer wakes it, wakes the waiters
/// the durable LSN covers (all of them once the WAL failed or stopped).
/// Ends, and forgets the thread's list, once the WAL can acknowledge nothing
/// more.
async fn drain(wal: Arc<Shared>, local: Rc<Local>) {
    poll_fn(|cx| {
        local.shared.drainer.register(cx.waker());
        let finished = wal.finished();
        let durable = wal.durable_lsn();
        let mut waiting = local.waiting.borrow_mut();
        let mut woken = Vec::new();
        let mut lowest = NONE_WAITING;
        waiting.retain(|(lsn, waker)| {
            if finished || *lsn <= durable {
                woken.push(waker.clone());
                false
            } else {
                lowest = lowest.min(*lsn);
                true
            }
        });
        local.shared.lowest_lsn.store(lowest, Ordering::SeqCst);
        drop(waiting);
        for waker in woken {
            waker.wake();
        }
        if finished {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    wal.threads
        .threads
        .lock()
        .retain(|t| !Arc::ptr_eq(t, &local.shared));
    LOCALS.with(|locals| locals.borrow_mut().retain(|l| !Rc::ptr_eq(l, &local)));
}

#[cfg(test)]
mod tests {
    use crate::log::LogError;
    use crate::storage::FaultyStorage;
    use crate::wal::{Wal, WalOptions};
    use futures_util::future::join_all;
    use std::sync::Arc;

    /// Waiters registered on this thread for `lsns`, polled once so that
    /// they wait; resolved through the returned handle.
    async fn waiting(
        wal: &Wal,
        lsns: impl Iterator<Item = u64>,
    ) -> actix_rt::task::JoinHandle<Vec<Result<(), LogError>>> {
        let waits: Vec<_> = lsns.map(|lsn| wal.durable(lsn)).collect();
        let joined = actix_rt::spawn(join_all(waits));
        // Let the join poll each wait once, registering it.
        actix_rt::task::yield_now().await;
        joined
    }

    #[actix_rt::test]
    async fn two_hundred_waits_on_one_thread_cost_it_one_wake_up_per_batch() {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = FaultyStorage::new();
        let wal = Wal::open(
            Arc::new(storage.clone()),
            dir.path(),
            WalOptions::default(),
            1,
        )
        .expect("open");
        let held = storage.hold_syncs();
        assert_eq!(wal.append(b"first").expect("append"), 1);
        // The first batch is at its fsync; the rest queue behind it.
        storage.wait_for_held_syncs(1);
        for i in 2..=200u64 {
            assert_eq!(wal.append(&i.to_le_bytes()).expect("append"), i);
        }
        let joined = waiting(&wal, 1..=200).await;
        assert_eq!(wal.stats().thread_wakes, 0, "nothing durable yet");
        drop(held);
        let outcomes = joined.await.expect("join");
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        let stats = wal.stats();
        assert!(stats.thread_wakes >= 1, "the thread was woken: {stats:?}");
        assert!(
            stats.thread_wakes <= stats.batches,
            "one wake-up per batch at most, not one per waiter: {stats:?}"
        );
    }

    #[actix_rt::test]
    async fn a_failed_fsync_fails_every_waiter_on_the_thread() {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = FaultyStorage::new();
        let wal = Wal::open(
            Arc::new(storage.clone()),
            dir.path(),
            WalOptions::default(),
            1,
        )
        .expect("open");
        // The next file fsync (opening the WAL made and synced its segments).
        storage.fail_sync_at(Some(storage.syncs() + 1));
        let held = storage.hold_syncs();
        assert_eq!(wal.append(b"first").expect("append"), 1);
        storage.wait_for_held_syncs(1);
        for i in 2..=50u64 {
            assert_eq!(wal.append(&i.to_le_bytes()).expect("append"), i);
        }
        let joined = waiting(&wal, 1..=50).await;
        drop(held);
        let outcomes = joined.await.expect("join");
        assert_eq!(outcomes.len(), 50);
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, Err(LogError::Poisoned { .. }))),
            "{outcomes:?}"
        );
        // A wait made afterwards fails at once.
        assert!(matches!(
            wal.durable(1).await,
            Err(LogError::Poisoned { .. })
        ));
    }
}
