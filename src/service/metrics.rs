//! The daemon's Prometheus metrics: one registry (crate `prometheus-client`)
//! and the handles the edges bump — stage A and B of the daemon (inputs,
//! duplicates, rejections, alert messages, tracked patients, unacknowledged
//! inputs), the store's writer thread (commit batch sizes and durations) —
//! plus the values read only when scraped (broker connections, outbox rows
//! not yet published, rows in the outbox's dead-letter table). Encoded in the Prometheus text format 0.0.4 by
//! [`Metrics::encode`]; served by [`crate::service::http`].
//!
//! The hot path takes no lock: counters for every input kind, device event
//! kind and rejection code are created up front and bumped through their
//! atomic handles. The exceptions are the commit histograms (one short
//! uncontended mutex per committed transaction, after its fsync), the
//! unacknowledged-input queue (one uncontended push per input in stage A,
//! one pop in stage B) and alert messages (labels created on first use;
//! alerts are rare). The pure core knows nothing of this module.

use crate::clock::Clock;
use crate::contract::{DeviceEventKind, ErrorCode, Input};
use crate::mqtt::ConnectionStats;
use crate::service::memstats::MemStats;
use crate::store::CommitObserver;
use crate::vocab::TimeMs;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub(super) const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Input kinds, the values of `dosetrack_inputs_total{kind}`.
pub(super) const INPUT_KINDS: [&str; 5] = [
    "admit",
    "discharge",
    "dose",
    "device_event",
    "alert_command",
];

/// The two broker connections, the values of `{connection}`.
pub(super) const CONNECTIONS: [&str; 2] = ["ingest", "publisher"];

type Labels = Vec<(&'static str, &'static str)>;
type OwnedLabels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// The commit metrics the store's writer thread records (cloneable handles).
#[derive(Debug, Clone)]
pub(super) struct CommitMetrics {
    batch_ops: Histogram,
    duration_s: Histogram,
    last_commit_ms: Arc<AtomicI64>,
}

impl CommitMetrics {
    fn new() -> CommitMetrics {
        CommitMetrics {
            // 1, 2, 4, … 1024 ops per transaction.
            batch_ops: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            // 0.25 ms … about 8 s.
            duration_s: Histogram::new(exponential_buckets(0.000_25, 2.0, 16)),
            last_commit_ms: Arc::new(AtomicI64::new(0)),
        }
    }

    /// A transaction of `ops` ops committed after `seconds` (begin to
    /// commit, fsync included), at `now_ms`.
    pub(super) fn committed(&self, ops: usize, seconds: f64, now_ms: TimeMs) {
        self.batch_ops.observe(ops as f64);
        self.duration_s.observe(seconds);
        self.last_commit_ms.store(now_ms, Ordering::Relaxed);
    }

    /// When the last transaction committed (ms since the epoch), if one has.
    pub(super) fn last_commit_ms(&self) -> Option<TimeMs> {
        Some(self.last_commit_ms.load(Ordering::Relaxed)).filter(|t| *t > 0)
    }
}

/// [`CommitMetrics`] as the store's writer thread sees them: each commit
/// stamped with the daemon's clock.
struct StampedCommits {
    metrics: CommitMetrics,
    clock: Clock,
}

impl CommitObserver for StampedCommits {
    fn committed(&self, ops: usize, seconds: f64) {
        self.metrics.committed(ops, seconds, self.clock.now_ms());
    }
}

/// Inputs taken by stage A and not yet acknowledged (or given up), in
/// arrival order, by their receive time. Stage B finishes them in the same
/// order, so a queue of receive times is exact.
#[derive(Debug, Default)]
struct Lag {
    received_ms: Mutex<VecDeque<TimeMs>>,
}

/// How far behind the daemon is: inputs received and not yet acknowledged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct LagSnapshot {
    pub unacked_inputs: u64,
    /// Age of the oldest of them (s); 0 when there are none.
    pub oldest_unacked_age_s: f64,
}

/// Every metric of the daemon.
pub(super) struct Metrics {
    registry: Registry,
    inputs: [Counter; INPUT_KINDS.len()],
    device_events: Vec<Counter>,
    duplicates: Counter,
    rejected: Vec<Counter>,
    alert_messages: Family<OwnedLabels, Counter>,
    tracked_patients: Gauge,
    reconnects: [Counter; 2],
    connected: [Gauge; 2],
    unacked_inputs: Gauge,
    oldest_unacked_age_s: FloatGauge,
    outbox_pending: Gauge,
    outbox_dead_letter: Counter,
    outbox_dead_letter_rows: Gauge,
    heap_in_use: Gauge,
    heap_free: Gauge,
    sqlite_memory: Gauge,
    retained_inputs: Gauge,
    alert_records: Gauge,
    commit: CommitMetrics,
    lag: Lag,
    /// Rejections counted instead of stored in full (also in `rejected`).
    rejections_counted: Counter,
    /// The ingest's byte budget in use, and its read pauses.
    held_input_bytes: Gauge,
    read_pauses: Counter,
    /// Scrape-time refreshes and encoding, one at a time (the counters set
    /// from connection stats move by their difference).
    scrape: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Set a count gauge (an i64) from an unsigned count, saturating at
/// `i64::MAX` (never reached in practice; never a panic).
fn set_count<N: TryInto<i64>>(gauge: &Gauge, n: N) {
    gauge.set(n.try_into().unwrap_or(i64::MAX));
}

fn labelled<M: Clone + Default>(family: &Family<Labels, M>, labels: Labels) -> M {
    family.get_or_create(&labels).clone()
}

impl Metrics {
    /// A registry with every metric at zero (every known label value
    /// present, so a rate is defined from the first scrape on).
    pub(super) fn new() -> Metrics {
        let mut registry = Registry::default();

        let inputs = Family::<Labels, Counter>::default();
        registry.register(
            "dosetrack_inputs",
            "Inputs stored (new, not redeliveries), by kind",
            inputs.clone(),
        );
        let inputs = INPUT_KINDS.map(|k| labelled(&inputs, vec![("kind", k)]));

        let device_events = Family::<Labels, Counter>::default();
        registry.register(
            "dosetrack_device_events",
            "Device event inputs stored, by event kind",
            device_events.clone(),
        );
        let device_events = DeviceEventKind::KIND_NAMES
            .iter()
            .map(|k| labelled(&device_events, vec![("event", k)]))
            .collect();

        let duplicates = Counter::default();
        registry.register(
            "dosetrack_duplicates",
            "Redeliveries of inputs already stored (acknowledged, not applied again)",
            duplicates.clone(),
        );

        let rejected = Family::<Labels, Counter>::default();
        registry.register(
            "dosetrack_rejected",
            "Inputs rejected (stored, acknowledged, notice published), by contract error code",
            rejected.clone(),
        );
        let rejected = ErrorCode::ALL
            .iter()
            .map(|c| labelled(&rejected, vec![("code", c.as_str())]))
            .collect();

        let alert_messages = Family::<OwnedLabels, Counter>::default();
        registry.register(
            "dosetrack_alert_messages",
            "Alert lifecycle messages committed to the outbox, by rule and phase",
            alert_messages.clone(),
        );

        let tracked_patients = Gauge::default();
        registry.register(
            "dosetrack_tracked_patients",
            "Patients admitted and not discharged",
            tracked_patients.clone(),
        );

        let reconnects = Family::<Labels, Counter>::default();
        registry.register(
            "dosetrack_broker_reconnects",
            "Connections to the broker after the first one, by connection",
            reconnects.clone(),
        );
        let reconnects = CONNECTIONS.map(|c| labelled(&reconnects, vec![("connection", c)]));
        let connected = Family::<Labels, Gauge>::default();
        registry.register(
            "dosetrack_broker_connected",
            "1 while the connection to the broker is up, by connection",
            connected.clone(),
        );
        let connected = CONNECTIONS.map(|c| labelled(&connected, vec![("connection", c)]));

        let unacked_inputs = Gauge::default();
        registry.register(
            "dosetrack_unacked_inputs",
            "Inputs received and not yet acknowledged to the broker",
            unacked_inputs.clone(),
        );
        let oldest_unacked_age_s = FloatGauge::default();
        registry.register_with_unit(
            "dosetrack_oldest_unacked_input_age",
            "Age of the oldest input received and not yet acknowledged (0: none)",
            Unit::Seconds,
            oldest_unacked_age_s.clone(),
        );
        let outbox_pending = Gauge::default();
        registry.register(
            "dosetrack_outbox_pending",
            "Alert messages committed and not yet confirmed by the broker",
            outbox_pending.clone(),
        );
        let outbox_dead_letter = Counter::default();
        registry.register(
            "dosetrack_outbox_dead_letter",
            "Alert messages the broker connection refused for good (over max_packet_bytes, …), moved to the outbox_dead_letter table since start",
            outbox_dead_letter.clone(),
        );
        let outbox_dead_letter_rows = Gauge::default();
        registry.register(
            "dosetrack_outbox_dead_letter_rows",
            "Rows in the outbox_dead_letter table (every run)",
            outbox_dead_letter_rows.clone(),
        );

        let heap_in_use = Gauge::default();
        registry.register_with_unit(
            "dosetrack_memory_heap_in_use",
            "Heap allocated and not freed (glibc mallinfo2 uordblks + hblkhd; all Rust and SQLite allocations)",
            Unit::Bytes,
            heap_in_use.clone(),
        );
        let heap_free = Gauge::default();
        registry.register_with_unit(
            "dosetrack_memory_heap_free",
            "Heap freed and held by the allocator for reuse (glibc mallinfo2 fordblks): resident, not a leak",
            Unit::Bytes,
            heap_free.clone(),
        );
        let sqlite_memory = Gauge::default();
        registry.register_with_unit(
            "dosetrack_memory_sqlite",
            "Memory SQLite holds (sqlite3_memory_used: page caches, statements, schema); part of the heap in use",
            Unit::Bytes,
            sqlite_memory.clone(),
        );
        let retained_inputs = Gauge::default();
        registry.register(
            "dosetrack_tracker_retained_inputs",
            "Inputs the in-memory tracker keeps to rebuild models (admissions, doses, delivery events, device associations; not attributed heartbeats), at the last state tick",
            retained_inputs.clone(),
        );
        let alert_records = Gauge::default();
        registry.register(
            "dosetrack_alert_book_entries",
            "Open alerts and pending conditions held in memory, at the last state tick",
            alert_records.clone(),
        );

        let commit = CommitMetrics::new();
        registry.register(
            "dosetrack_commit_batch_ops",
            "Ops per committed store transaction (inputs, rejections, states and history, alert writes)",
            commit.batch_ops.clone(),
        );
        registry.register_with_unit(
            "dosetrack_commit_duration",
            "Duration of a committed store transaction, begin to commit (fsync included)",
            Unit::Seconds,
            commit.duration_s.clone(),
        );

        let rejections_counted = Counter::default();
        registry.register(
            "dosetrack_rejections_counted",
            "Rejections counted (rejection_counts), not stored in full: repeats of one source and code beyond the samples kept per minute; included in dosetrack_rejected_total",
            rejections_counted.clone(),
        );
        let held_input_bytes = Gauge::default();
        registry.register_with_unit(
            "dosetrack_ingest_held",
            "Received input held from the socket to its acknowledgement (the byte budget in use)",
            Unit::Bytes,
            held_input_bytes.clone(),
        );
        let read_pauses = Counter::default();
        registry.register(
            "dosetrack_ingest_read_pauses",
            "Times the broker connection stopped being read because the byte budget of held input was used up",
            read_pauses.clone(),
        );

        registry.register(
            "dosetrack_build",
            "The running version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );

        Metrics {
            registry,
            inputs,
            device_events,
            duplicates,
            rejected,
            alert_messages,
            tracked_patients,
            reconnects,
            connected,
            unacked_inputs,
            oldest_unacked_age_s,
            outbox_pending,
            outbox_dead_letter,
            outbox_dead_letter_rows,
            heap_in_use,
            heap_free,
            sqlite_memory,
            retained_inputs,
            alert_records,
            commit,
            lag: Lag::default(),
            rejections_counted,
            held_input_bytes,
            read_pauses,
            scrape: Mutex::new(()),
        }
    }

    /// The commit metrics.
    pub(super) fn commit(&self) -> CommitMetrics {
        self.commit.clone()
    }

    /// What the store's writer thread records its commits in
    /// ([`crate::store::Writer::open_with_metrics`]), stamped by `clock`.
    pub(super) fn commit_observer(&self, clock: Clock) -> Arc<dyn CommitObserver> {
        Arc::new(StampedCommits {
            metrics: self.commit.clone(),
            clock,
        })
    }

    /// A new input was stored.
    pub(super) fn input(&self, input: &Input) {
        let kind = match input {
            Input::Admit(_) => 0,
            Input::Discharge(_) => 1,
            Input::Dose(_) => 2,
            Input::DeviceEvent(e) => {
                let name = e.kind.kind_name();
                if let Some(i) = DeviceEventKind::KIND_NAMES.iter().position(|k| *k == name) {
                    if let Some(c) = self.device_events.get(i) {
                        c.inc();
                    }
                }
                3
            }
            Input::AlertCommand(_) => 4,
        };
        self.inputs[kind].inc();
    }

    /// A redelivery of a stored input.
    /// A rejection was counted, not stored in full.
    pub(super) fn rejection_counted(&self) {
        self.rejections_counted.inc();
    }

    pub(super) fn duplicate(&self) {
        self.duplicates.inc();
    }

    /// An input was rejected with `code` (and the rejection stored).
    pub(super) fn rejected(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            if let Some(c) = self.rejected.get(i) {
                c.inc();
            }
        }
    }

    /// An alert lifecycle message was committed.
    pub(super) fn alert_message(&self, rule: &str, phase: &str) {
        self.alert_messages
            .get_or_create(&vec![
                ("rule", rule.to_owned()),
                ("phase", phase.to_owned()),
            ])
            .inc();
    }

    /// What the pure core holds in memory (stage B, at each state tick —
    /// every 10 s at the default interval, [`crate::republish`] — a pass
    /// over the patients and devices without allocation):
    /// the tracker's retained inputs and the alert book's entries. Both grow
    /// only with clinical activity, never with heartbeats or time.
    pub(super) fn set_core_sizes(&self, retained_inputs: usize, alert_book_entries: usize) {
        set_count(&self.retained_inputs, retained_inputs);
        set_count(&self.alert_records, alert_book_entries);
    }

    /// The outbox moved `n` rows to the dead-letter table.
    pub(super) fn outbox_dead_lettered(&self, n: u64) {
        self.outbox_dead_letter.inc_by(n);
    }

    /// How many patients are tracked now.
    pub(super) fn set_tracked_patients(&self, n: usize) {
        set_count(&self.tracked_patients, n);
    }

    /// Stage A took an input received at `received_ms`.
    pub(super) fn input_received(&self, received_ms: TimeMs) {
        if let Ok(mut q) = self.lag.received_ms.lock() {
            q.push_back(received_ms);
        }
    }

    /// Stage B is done with the `n` oldest inputs (acknowledged, or given
    /// up on: not stored, redelivered later).
    pub(super) fn inputs_finished(&self, n: usize) {
        if let Ok(mut q) = self.lag.received_ms.lock() {
            let n = n.min(q.len());
            q.drain(..n);
        }
    }

    /// Inputs not yet acknowledged, and the oldest one's age at `now_ms`.
    pub(super) fn lag(&self, now_ms: TimeMs) -> LagSnapshot {
        let (n, oldest) = match self.lag.received_ms.lock() {
            Ok(q) => (q.len(), q.front().copied()),
            Err(_) => (0, None),
        };
        LagSnapshot {
            unacked_inputs: n as u64,
            oldest_unacked_age_s: oldest.map_or(0.0, |t| ((now_ms - t).max(0) as f64) / 1000.0),
        }
    }

    /// Refresh the values read at scrape time and encode every metric in
    /// the Prometheus text format.
    pub(super) fn encode(&self, scraped: &Scraped) -> Result<String, std::fmt::Error> {
        let _one_at_a_time = self.scrape.lock().map_err(|_| std::fmt::Error)?;
        for (i, stats) in [scraped.ingest, scraped.publisher].iter().enumerate() {
            let reconnects = stats.connections.saturating_sub(1);
            let counted = self.reconnects[i].get();
            if reconnects > counted {
                self.reconnects[i].inc_by(reconnects - counted);
            }
            self.connected[i].set(i64::from(stats.connected));
        }
        set_count(&self.held_input_bytes, scraped.ingest.held_input_bytes);
        let pauses = scraped.ingest.read_pauses;
        if pauses > self.read_pauses.get() {
            self.read_pauses.inc_by(pauses - self.read_pauses.get());
        }
        let lag = self.lag(scraped.now_ms);
        set_count(&self.unacked_inputs, lag.unacked_inputs);
        self.oldest_unacked_age_s.set(lag.oldest_unacked_age_s);
        if let Some(n) = scraped.outbox_pending {
            set_count(&self.outbox_pending, n);
        }
        if let Some(n) = scraped.outbox_dead_letter_rows {
            set_count(&self.outbox_dead_letter_rows, n);
        }
        let mem = scraped.memory;
        if let Some(b) = mem.heap_in_use_bytes {
            set_count(&self.heap_in_use, b);
        }
        if let Some(b) = mem.heap_free_bytes {
            set_count(&self.heap_free, b);
        }
        set_count(&self.sqlite_memory, mem.sqlite_bytes);
        let mut out = String::with_capacity(8 * 1024);
        prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// What the scrape reads from the daemon's edges.
#[derive(Debug, Clone, Copy)]
pub(super) struct Scraped {
    pub ingest: ConnectionStats,
    pub publisher: ConnectionStats,
    /// `None` when the database could not be read (the gauge keeps its
    /// last value).
    pub outbox_pending: Option<u64>,
    /// Rows in `outbox_dead_letter`; `None` when not readable.
    pub outbox_dead_letter_rows: Option<u64>,
    /// The process's memory figures at the scrape.
    pub memory: MemStats,
    pub now_ms: TimeMs,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn scraped(ingest_connections: u64) -> Scraped {
        let ingest = ConnectionStats {
            connections: ingest_connections,
            connected: true,
            ..ConnectionStats::default()
        };
        Scraped {
            ingest,
            publisher: ConnectionStats::default(),
            outbox_pending: Some(3),
            outbox_dead_letter_rows: Some(1),
            memory: MemStats {
                heap_in_use_bytes: Some(7_000_000),
                heap_free_bytes: Some(2_500_000),
                sqlite_bytes: 900_000,
            },
            now_ms: 10_000,
        }
    }

    #[test]
    fn every_known_label_is_there_from_the_start_and_counts_move() {
        let m = Metrics::new();
        m.rejected(ErrorCode::InvalidJson);
        m.duplicate();
        m.commit().committed(3, 0.002, 5_000);
        m.set_core_sizes(41, 5);
        m.outbox_dead_lettered(2);
        let text = m.encode(&scraped(3)).unwrap();
        for line in [
            "dosetrack_inputs_total{kind=\"alert_command\"} 0",
            "dosetrack_rejected_total{code=\"invalid_json\"} 1",
            "dosetrack_rejected_total{code=\"duplicate_conflict\"} 0",
            "dosetrack_duplicates_total 1",
            "dosetrack_broker_reconnects_total{connection=\"ingest\"} 2",
            "dosetrack_broker_reconnects_total{connection=\"publisher\"} 0",
            "dosetrack_broker_connected{connection=\"ingest\"} 1",
            "dosetrack_outbox_pending 3",
            "dosetrack_outbox_dead_letter_total 2",
            "dosetrack_outbox_dead_letter_rows 1",
            "dosetrack_commit_batch_ops_count 1",
            "dosetrack_commit_duration_seconds_count 1",
            "dosetrack_memory_heap_in_use_bytes 7000000",
            "dosetrack_memory_heap_free_bytes 2500000",
            "dosetrack_memory_sqlite_bytes 900000",
            "dosetrack_tracker_retained_inputs 41",
            "dosetrack_alert_book_entries 5",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert!(text.contains("dosetrack_build_info{version=\""), "{text}");
        // Counters set from connection stats move by their difference only.
        let text = m.encode(&scraped(3)).unwrap();
        assert!(text.contains("dosetrack_broker_reconnects_total{connection=\"ingest\"} 2\n"));
    }

    #[test]
    fn lag_is_the_oldest_unfinished_input() {
        let m = Metrics::new();
        assert_eq!(m.lag(0).unacked_inputs, 0);
        m.input_received(1_000);
        m.input_received(4_000);
        let lag = m.lag(6_000);
        assert_eq!(lag.unacked_inputs, 2);
        assert!((lag.oldest_unacked_age_s - 5.0).abs() < 1e-9);
        m.inputs_finished(1);
        assert!((m.lag(6_000).oldest_unacked_age_s - 2.0).abs() < 1e-9);
        m.inputs_finished(5);
        assert_eq!(
            m.lag(6_000),
            LagSnapshot {
                unacked_inputs: 0,
                oldest_unacked_age_s: 0.0
            }
        );
    }
}
