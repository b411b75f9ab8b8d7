//! Tuning of the C allocator (glibc `malloc`) for a long-running server.
//!
//! glibc serves allocations above a threshold with their own `mmap` and
//! returns them to the OS on free. By default that threshold is *dynamic*:
//! freeing such a block raises it to the block's size (up to 32 MiB). After
//! the first large request — a 10 000-token batch parses into megabytes of
//! body, items and response — buffers of that size are carved from the
//! per-thread heaps instead, and each thread's heap keeps its high-water mark
//! resident for the life of the process. Fixing the threshold keeps large,
//! short-lived buffers out of the heaps, so resident memory follows the
//! tokens held rather than the largest requests seen.

/// Size from which an allocation gets its own mapping: glibc's own starting
/// value, held fixed. Token chunks are sized above it (`shard::table`).
pub const MMAP_THRESHOLD_BYTES: usize = 128 * 1024;
/// The largest request glibc serves from its per-thread cache (tcache: a
/// pop from a list, no lock). A larger one takes the arena's general path,
/// which may first merge every freed small chunk (`malloc_consolidate`):
/// the future of each HTTP request is one allocation, and is kept under
/// this (see `api::tokens`'s tests).
pub const THREAD_CACHE_BYTES_MAX: usize = 1032;

/// The environment variable with which a user sets the threshold
/// themselves; when present, their choice stands.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_ENV: &str = "MALLOC_MMAP_THRESHOLD_";

/// Fixes glibc's mmap threshold (see the module doc). Call once, at start-up,
/// before other threads allocate. Best effort: a refusal only costs memory,
/// so it is logged, not returned. A no-op on other platforms and allocators.
pub fn tune_for_server() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os(MMAP_THRESHOLD_ENV).is_some() {
            return;
        }
        // SAFETY: mallopt only reads its two integer arguments and updates
        // the allocator's parameters under the allocator's own lock.
        let accepted =
            unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES as libc::c_int) };
        if accepted != 1 {
            tracing::warn!("glibc refused a fixed mmap threshold; memory may stay resident after large requests");
        }
    }
}

/// Hands the free pages inside the heaps back to the OS. Call once, after
/// start-up: building the API's document and schemas, and restoring, peak
/// well above what they keep (an empty server held 9 MiB of heap for 3 MiB
/// live), and glibc only returns free memory at a heap's top by itself.
/// A no-op on other platforms and allocators.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes no pointers; it walks the allocator's
        // arenas under their own locks.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
