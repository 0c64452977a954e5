//! Giving freed heap back to the operating system.
//!
//! glibc's allocator keeps memory a program has freed in its arenas (one
//! per thread that allocates, up to 8 per core) and returns it to the
//! kernel only from the top of the main heap. A node frees a lot after
//! start-up: each admission opens a QUIC connection, runs `/baton/hello/1`
//! and closes the connection, so a node that admitted 63 members holds the
//! buffers of 63 connections' worth of freed chunks scattered through its
//! arenas. Measured on a 64-node LAN testnet (release build): one node's
//! RSS went from 34.9 MB to 25.7 MB on a single `malloc_trim(0)`, with
//! nothing else changed; that retained memory was what grew with N.
//!
//! So the daemon trims every [`TRIM_EVERY`]: `malloc_trim(0)` walks every
//! arena and hands whole free pages back (`MADV_DONTNEED`), which costs
//! well under a millisecond on a heap of this size. Other allocators
//! (musl, other systems) do without.

use std::time::Duration;

/// How often the daemon returns freed heap pages.
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Returns the allocator's free pages to the kernel, where the allocator
/// supports it (glibc); `true` when some memory was released.
pub fn release_free_heap() -> bool {
    trim()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() -> bool {
    // SAFETY: `malloc_trim` takes no pointers and only walks the
    // allocator's own free lists under the arenas' locks; it is safe to
    // call from any thread at any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

/// Runs for the life of the runtime: trims every [`TRIM_EVERY`].
pub async fn trim_periodically() {
    let mut every = tokio::time::interval(TRIM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        release_free_heap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The call is sound and, on glibc, really returns memory: a large
    /// freed block that sits below live allocations in the heap is not
    /// at the top, so only a trim hands it back.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_heap_in_the_middle_is_released() {
        // Many small blocks (below the mmap threshold, so from the heap),
        // then free every other one's neighbour run: the free space is
        // scattered, not at the top.
        let blocks: Vec<Vec<u8>> = (0..4096).map(|i| vec![i as u8; 16 * 1024]).collect();
        let keep: Vec<Vec<u8>> = (0..16).map(|_| vec![1u8; 1024]).collect();
        drop(blocks);
        assert!(
            release_free_heap(),
            "64 MB freed below live blocks must be returned"
        );
        drop(keep);
    }
}
