//! The spare segment and the thread that prepares it: the next segment file, pre-allocated
//! (written with zeros and fsynced, see [`SpareFile`]) off the commit path, so that a rotation
//! only writes a header and renames the file instead of stalling every append for the time it
//! takes to write a segment of zeros.
//!
//! [`super::Wal::open`] prepares the first spare itself, so the first rotation never waits;
//! each rotation takes the spare ([`SpareSlot::take`]), installs it as the new segment (which
//! renames it), and only then wakes the preparer thread for the next
//! ([`SpareSlot::want_next`]): the spare's name must be free by then, or the preparer would
//! take the file being installed for a spare left by an earlier run. A rotation that comes
//! before the next spare is ready waits for it (counted in [`super::WalStats::spare_waits`]).
//! A failure to prepare one poisons the WAL at once, like any other failed write or fsync: a
//! failed fsync is never retried.

use super::segment::SpareFile;
use crate::storage::Storage;
use parking_lot::{Condvar, Mutex};
use std::fmt::Display;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Where the prepared spare waits for a rotation; shared by the writer thread (which takes it)
/// and the preparer thread (which refills it).
pub(crate) struct SpareSlot {
    /// The spare and the preparer's state.
    state: Mutex<SlotState>,
    /// Signalled when a spare is put in or taken, and when the preparer stops.
    changed: Condvar,
    /// Set to stop the preparer, which checks it between chunks of zeros so that closing the WAL
    /// does not wait for a whole segment of them.
    stopping: AtomicBool,
}

/// What [`SpareSlot::state`] guards.
struct SlotState {
    /// The prepared spare, whole and durable, waiting for a rotation.
    ready: Option<SpareFile>,
    /// A rotation installed the last spare: the preparer is to make the next.
    wanted: bool,
    /// The preparer has stopped (closed, failed or panicked): no spare will come any more.
    stopped: bool,
}

impl SpareSlot {
    /// A slot holding `spare`, which must be ready.
    pub(crate) fn new(spare: SpareFile) -> Self {
        assert!(
            spare.is_ready(),
            "the first spare is prepared before the WAL opens"
        );
        SpareSlot {
            state: Mutex::new(SlotState {
                ready: Some(spare),
                wanted: false,
                stopped: false,
            }),
            changed: Condvar::new(),
            stopping: AtomicBool::new(false),
        }
    }

    /// Takes the spare, waiting for the preparer if it is not ready yet; also says whether it
    /// waited. `None` once the preparer has stopped without one (it failed and poisoned the WAL,
    /// or the WAL is closing). Call [`SpareSlot::want_next`] once it is installed.
    pub(crate) fn take(&self) -> Option<(SpareFile, bool)> {
        let mut st = self.state.lock();
        let mut waited = false;
        loop {
            if let Some(spare) = st.ready.take() {
                return Some((spare, waited));
            }
            if st.stopped {
                return None;
            }
            waited = true;
            self.changed.wait(&mut st);
        }
    }

    /// Wakes the preparer for the next spare: the one taken has been installed (renamed), so its
    /// name is free.
    pub(crate) fn want_next(&self) {
        self.state.lock().wanted = true;
        self.changed.notify_all();
    }

    /// Tells the preparer to stop (between two chunks of zeros); join its thread after this.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        // Taking the lock orders this wake-up after the preparer's check of `stopping`.
        drop(self.state.lock());
        self.changed.notify_all();
    }

    /// Marks the preparer stopped and wakes a rotation waiting for it.
    fn set_stopped(&self) {
        self.state.lock().stopped = true;
        self.changed.notify_all();
    }
}

/// The preparer thread's body: whenever a spare is wanted, prepares one of `size` bytes in `dir`
/// and puts it in the slot, until [`SpareSlot::stop`]. A failure is handed to `fail` (which
/// poisons the WAL) and ends the thread.
pub(crate) fn run_preparer(
    slot: Arc<SpareSlot>,
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    size: u64,
    fail: impl Fn(&dyn Display),
) {
    /// Marks the preparer stopped however the thread ends, a panic included, so that no
    /// rotation waits for it for ever.
    struct Stopped<'a, F: Fn(&dyn Display)>(
        /// The slot whose waiting rotation is woken.
        &'a SpareSlot,
        /// Poisons the WAL when the thread panicked.
        &'a F,
    );
    impl<F: Fn(&dyn Display)> Drop for Stopped<'_, F> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                (self.1)(&"its thread panicked");
            }
            self.0.set_stopped();
        }
    }
    let _stopped = Stopped(&slot, &fail);
    loop {
        {
            let mut st = slot.state.lock();
            while !st.wanted && !slot.stopping.load(Ordering::Acquire) {
                slot.changed.wait(&mut st);
            }
            if slot.stopping.load(Ordering::Acquire) {
                return;
            }
            assert!(
                st.ready.is_none(),
                "a spare is wanted only once the last was taken"
            );
            st.wanted = false;
        }
        let mut spare = match SpareFile::open(storage.as_ref(), &dir, size) {
            Ok(spare) => spare,
            Err(e) => return fail(&e),
        };
        loop {
            if slot.stopping.load(Ordering::Acquire) {
                // What is written so far stays: the next open goes on from there.
                return;
            }
            match spare.fill_step() {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => return fail(&e),
            }
        }
        slot.state.lock().ready = Some(spare);
        slot.changed.notify_all();
    }
}
