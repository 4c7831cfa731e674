//! How the operator's process gives memory back to the system.
//!
//! glibc's allocator keeps freed memory for reuse, in one arena per thread that ever
//! allocated (up to eight per core). A relist replaces every object of a watch cache: the new
//! copies are built before the old ones are dropped, and without help the process stays at
//! the size of both. A burst of reconciles (a relist, a flood of new Transforms) leaves its
//! transient state freed between the allocations that live on, in pages the allocator keeps.
//! Two arenas are enough for a process that runs on a few runtime threads; after a relist,
//! and when a burst of reconciles has ended, the freed pages are handed back.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Allocations from this size up get pages of their own, handed back when freed.
const OWN_PAGES_FROM: i32 = 256 << 10;

/// At most two allocator arenas, and large allocations (a page of a list, a response body)
/// always in pages of their own: call before the runtime's threads start.
///
/// glibc raises its threshold for that as large blocks are freed (up to 32 MiB), after
/// which the body of every list lands among the objects that live on and leaves holes
/// that cannot be handed back; a fixed threshold keeps it where it is.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets tunables of the allocator; called before other threads run.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, OWN_PAGES_FROM);
    }
}

/// Gives the pages of freed memory back to the system (after a watch cache was replaced).
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Reconciles that make a burst: fewer finished since the last release are not worth the
/// walk over the allocator's free lists.
pub const BURST: usize = 100;

/// Releases freed memory when the reconciles of a burst are over: the last reconcile to
/// finish, with none other running and at least [`BURST`] finished since the last release,
/// hands the freed pages back (on a blocking thread: the walk takes milliseconds).
#[derive(Debug, Default)]
pub struct AfterBursts {
    running: AtomicUsize,
    finished: AtomicUsize,
}

/// A reconcile under way; dropping it marks it finished.
#[must_use]
pub struct Running<'a> {
    bursts: &'a AfterBursts,
    release: fn(),
}

impl AfterBursts {
    /// A reconcile starts.
    pub fn start(&self) -> Running<'_> {
        self.start_with(|| {
            tokio::task::spawn_blocking(release_freed_memory);
        })
    }

    fn start_with(&self, release: fn()) -> Running<'_> {
        self.running.fetch_add(1, Ordering::SeqCst);
        Running {
            bursts: self,
            release,
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let bursts = self.bursts;
        let finished = bursts.finished.fetch_add(1, Ordering::SeqCst) + 1;
        let others = bursts.running.fetch_sub(1, Ordering::SeqCst) - 1;
        if others == 0
            && finished >= BURST
            && bursts
                .finished
                .compare_exchange(finished, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            (self.release)();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    static RELEASES: AtomicUsize = AtomicUsize::new(0);

    fn count() {
        RELEASES.fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn memory_is_released_once_a_burst_of_reconciles_is_over() {
        let bursts = AfterBursts::default();
        // A burst: one reconcile runs throughout while the others come and go.
        let long = bursts.start_with(count);
        for _ in 0..BURST + 10 {
            drop(bursts.start_with(count));
        }
        assert_eq!(RELEASES.load(Ordering::SeqCst), 0, "not while one runs");
        drop(long);
        assert_eq!(RELEASES.load(Ordering::SeqCst), 1, "when the last one ends");
        // A trickle of reconciles afterwards is no burst.
        for _ in 0..BURST - 1 {
            drop(bursts.start_with(count));
        }
        assert_eq!(RELEASES.load(Ordering::SeqCst), 1);
        drop(bursts.start_with(count));
        assert_eq!(RELEASES.load(Ordering::SeqCst), 2, "the next burst's end");
    }
}
