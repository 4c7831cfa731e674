//! How the operator's process gives memory back to the system.
//!
//! glibc's allocator keeps freed memory for reuse, in one arena per thread that ever
//! allocated (up to eight per core). A relist replaces every object of a watch cache: the new
//! copies are built before the old ones are dropped, and without help the process stays at
//! the size of both. Two arenas are enough for a process that runs on a few runtime threads,
//! and after a relist the freed pages are handed back.

/// At most two allocator arenas: call before the runtime's threads start.
pub fn limit_allocator_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of the allocator; called before other threads run.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
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
