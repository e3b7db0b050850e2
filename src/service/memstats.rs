//! Where the daemon's memory is: the C heap's bytes in use and bytes held
//! free (glibc's `mallinfo2`, which every Rust allocation and SQLite's own go
//! through: the crate uses the system allocator) and the part SQLite holds
//! (`sqlite3_memory_used`: page caches, prepared statements, schema).
//!
//! The resident set size alone cannot tell a leak from an allocator that
//! keeps freed memory for reuse: a leak grows the heap *in use*; retention
//! grows only the free part. `/metrics` exports these figures
//! ([`crate::service::metrics`]) and the soak harness (`tests/it/soak.rs`) bounds the
//! in-use figure's growth over a sustained run.
//!
//! This module owns the only `unsafe` code of the crate: two FFI calls that
//! take no arguments and return plain values, and `malloc_trim` ([`trim`]),
//! which gives freed heap back to the system after ended stays are released.

/// One reading. `None` for the heap figures where the C library is not glibc
/// (`mallinfo2` is glibc's; the crate's target is Debian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct MemStats {
    /// Bytes allocated and not yet freed (`uordblks + hblkhd`: the arenas'
    /// chunks in use plus the blocks served directly by `mmap`).
    pub heap_in_use_bytes: Option<u64>,
    /// Bytes freed and kept by the allocator for reuse (`fordblks`): part of
    /// the resident set, not a leak.
    pub heap_free_bytes: Option<u64>,
    /// Bytes SQLite has allocated (all connections of the process); part of
    /// `heap_in_use_bytes`.
    pub sqlite_bytes: u64,
}

/// Read the figures now. Cheap (the allocator walks its arenas: a few µs),
/// meant for a scrape or a sample, not a hot path.
pub(super) fn read() -> MemStats {
    let (heap_in_use_bytes, heap_free_bytes) = heap();
    // SAFETY: `sqlite3_memory_used` takes no arguments, touches no caller
    // memory and is safe to call from any thread at any time (it reads
    // SQLite's global allocation counter; the bundled SQLite is built
    // threadsafe).
    #[allow(unsafe_code)]
    let sqlite = unsafe { rusqlite::ffi::sqlite3_memory_used() };
    MemStats {
        heap_in_use_bytes,
        heap_free_bytes,
        sqlite_bytes: u64::try_from(sqlite).unwrap_or(0),
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap() -> (Option<u64>, Option<u64>) {
    // SAFETY: `mallinfo2` (glibc ≥ 2.33) takes no arguments and returns a
    // struct by value; it locks each arena while it sums it, so it is safe
    // to call concurrently with allocations on other threads.
    #[allow(unsafe_code)]
    let m = unsafe { libc::mallinfo2() };
    let in_use = (m.uordblks as u64).saturating_add(m.hblkhd as u64);
    (Some(in_use), Some(m.fordblks as u64))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap() -> (Option<u64>, Option<u64>) {
    (None, None)
}

/// Give the heap's free memory back to the system (glibc `malloc_trim`),
/// after a large release (ended stays dropped from memory): without it the
/// allocator keeps what was freed and the resident set stays at its peak.
/// A few ms per call; meant for a rare event, not a hot path.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(super) fn trim() {
    // SAFETY: `malloc_trim` takes a plain size argument, touches no caller
    // memory and locks each arena while it trims it, so it is safe to call
    // concurrently with allocations on other threads.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(super) fn trim() {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// The in-use figure follows a live allocation up and back down, and
    /// SQLite's figure follows an open connection's cache: the readings are
    /// the process's, not constants.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn readings_follow_allocations() {
        // Other tests of this binary allocate and free at the same time
        // (under load, tens of MiB between two readings), so one reading
        // can be off by their churn: the figure must follow the 64 MiB
        // block in at least one of three tries.
        let mut seen = Vec::new();
        for _ in 0..3 {
            let before = read();
            // 64 MiB, touched so it is resident.
            let block = std::hint::black_box(vec![1u8; 64 << 20]);
            let during = read();
            drop(std::hint::black_box(block));
            let after = read();
            let grew =
                during.heap_in_use_bytes.unwrap() as i64 - before.heap_in_use_bytes.unwrap() as i64;
            let held =
                after.heap_in_use_bytes.unwrap() as i64 - before.heap_in_use_bytes.unwrap() as i64;
            if grew >= 60 << 20 && held < 32 << 20 {
                seen.clear();
                break;
            }
            seen.push((grew, held));
        }
        assert!(
            seen.len() < 3,
            "in use did not follow a 64 MiB block in 3 tries (grew, then still held after the free, bytes): {seen:?}"
        );

        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE t(x BLOB); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 32000) \
             INSERT INTO t SELECT zeroblob(1000) FROM n;",
        )
        .unwrap();
        // Other tests of this binary use SQLite at the same time: the
        // figures are compared with margins far above their page caches.
        let with_db = read().sqlite_bytes;
        assert!(
            with_db >= 24 << 20,
            "SQLite holds {with_db} bytes with a ~32 MB in-memory table"
        );
        drop(conn);
        let closed = read().sqlite_bytes;
        assert!(
            closed + (16 << 20) < with_db,
            "closing the database frees its memory: {with_db} → {closed} bytes"
        );
    }
}
