//! What shows the daemon makes progress, for the systemd watchdog
//! ([`crate::service::systemd`]) and `/healthz` ([`crate::service::http`]):
//! stage B's heartbeat with its counters ([`Progress`], [`RunSummary`]),
//! and whether the store's writer thread answers ([`writer_alive`]).
//!
//! It depends on no other part of the service: stage B writes here, the
//! watchers read here.

use crate::store::Writer;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub replayed: usize,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
}

/// Stage B's heartbeat and counters, shared with the supervisor.
#[derive(Debug, Default)]
pub struct Progress {
    beats: AtomicU64,
    accepted: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
}

/// The counters of the last beat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
}

impl Progress {
    /// Stage B came round its loop, with these counters.
    pub fn beat(&self, summary: &RunSummary) {
        self.accepted.store(summary.accepted, Ordering::Relaxed);
        self.duplicates.store(summary.duplicates, Ordering::Relaxed);
        self.rejected.store(summary.rejected, Ordering::Relaxed);
        self.beats.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times stage B came round so far.
    pub fn beats(&self) -> u64 {
        self.beats.load(Ordering::Relaxed)
    }

    /// The counters of the last beat.
    pub fn counters(&self) -> Counters {
        Counters {
            accepted: self.accepted.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}

/// Whether the store's writer thread makes progress: it answered a
/// [`Writer::ping`] within `probe`, or committed something since
/// `last_commits` (updated). Used by the watchdog and by `/healthz`.
pub(super) async fn writer_alive(writer: &Writer, probe: Duration, last_commits: &mut u64) -> bool {
    let answered = matches!(tokio::time::timeout(probe, writer.ping()).await, Ok(Ok(())));
    let commits = writer.stats().commits;
    let alive = answered || commits != *last_commits;
    *last_commits = commits;
    alive
}
