//! Stage A (receive): take each message from the ingest connection (and
//! the alert commands of the ward page's acknowledge) in arrival order, decide on it with [`intake`] (pure), and
//! submit its write to the store at once — so that concurrent inputs share
//! a commit — then hand it to stage B ([`InFlight`]) with its
//! acknowledgement token, which stage B alone spends.
//!
//! Stage A checks with the drug file and limits in force
//! ([`IntakeSettings`]; a reload replaces them).
//!
//! Every rejection is logged at warn ([`RejectionLog`]): source, topic,
//! code, field, message — at most [`REJECTIONS_LOGGED_PER_MINUTE`] lines per
//! source (`patients/{id}`, `devices/{id}`, …) per minute; the rest are
//! counted and the count is logged when the minute is over. Every rejection
//! is stored: the first `[limits] rejection_samples_per_minute` per source, code
//! and minute in full (`dosetrack rejected` lists them), the rest as an
//! exact count ([`RejectionSampler`], table `rejection_counts`).
//!
//! An input published at QoS 0 is refused `wrong_qos` before it is parsed
//! (the contract: every input is published at QoS 1).

use crate::contract::{topic_source, ErrorCode, Rejection};
use crate::intake::{self, Intake, IntakeRules, RejectedNotice};
use crate::mqtt::{AckToken, Incoming};
use crate::patient::Formulary;
use crate::records::RejectedRecord;
use crate::service::metrics::Metrics;
use crate::store::{Queued, RejectionCount, StoreError, WriteOp, Writer};
use crate::tracker::TrackedInput;
use crate::vocab::TimeMs;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

/// Most rejection lines logged per source in one minute.
pub(super) const REJECTIONS_LOGGED_PER_MINUTE: u32 = 10;

/// Most sources tracked in one minute; beyond it, every further source
/// shares one budget (a flood of made-up ids cannot grow the map).
const MAX_SOURCES: usize = 1000;

/// The rate limit of the rejection log lines.
#[derive(Default)]
pub(super) struct RejectionLog {
    /// Per source this minute: lines logged, rejections not logged.
    sources: HashMap<String, (u32, u64)>,
}

impl RejectionLog {
    /// Log `r` at warn, unless its source has used up this minute's lines.
    pub(super) fn rejected(&mut self, r: &RejectedRecord) {
        let source = topic_source(&r.topic);
        let key = if self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(source) {
            "(other sources)"
        } else {
            source
        };
        let entry = self.sources.entry(key.to_owned()).or_insert((0, 0));
        if entry.0 >= REJECTIONS_LOGGED_PER_MINUTE {
            entry.1 += 1;
            return;
        }
        entry.0 += 1;
        let last = entry.0 == REJECTIONS_LOGGED_PER_MINUTE;
        warn!(
            source = %source,
            topic = %r.topic,
            code = %r.code,
            field = r.field.as_deref().map(tracing::field::display),
            message = %r.message,
            "input rejected{}",
            if last {
                "; further rejections from this source are counted, not logged, until the minute is over"
            } else {
                ""
            }
        );
    }

    /// The minute is over: log what was not logged, start a new minute.
    pub(super) fn minute_over(&mut self) {
        for (source, (_, suppressed)) in self.sources.drain() {
            if suppressed > 0 {
                warn!(source = %source, suppressed,
                    "rejections not logged in the last minute (all stored: dosetrack rejected)");
            }
        }
    }
}

/// Keeps repeated rejections as a count plus samples: per (source, code)
/// and minute of receipt, the first `samples` (`[limits]
/// rejection_samples_per_minute`, default 10) are
/// stored in full (`rejected`) and published; every further one adds one
/// to its (source, code, minute) row of `rejection_counts`, in the same
/// group commit as everything else, before it is acknowledged. The count
/// is exact; a flood of copies costs a counter, not a row and a notice
/// each. At most [`MAX_SOURCES`] keys per minute are told apart; beyond
/// that, every further source shares the key `(other sources)`.
#[derive(Default)]
pub(super) struct RejectionSampler {
    minute_ms: i64,
    stored: HashMap<(String, ErrorCode), u32>,
}

impl RejectionSampler {
    /// `Some(count)` when `r` is to be counted, not stored in full.
    pub(super) fn count_instead(
        &mut self,
        r: &RejectedRecord,
        samples: u32,
    ) -> Option<RejectionCount> {
        let minute_ms = r.received_at_ms - r.received_at_ms.rem_euclid(60_000);
        if minute_ms != self.minute_ms {
            self.minute_ms = minute_ms;
            self.stored.clear();
        }
        let source = topic_source(&r.topic);
        let key = if self.stored.len() >= MAX_SOURCES
            && !self.stored.contains_key(&(source.to_owned(), r.code))
        {
            ("(other sources)".to_owned(), r.code)
        } else {
            (source.to_owned(), r.code)
        };
        let stored = self.stored.entry(key.clone()).or_insert(0);
        if *stored < samples.max(1) {
            *stored += 1;
            return None;
        }
        Some(RejectionCount {
            source: key.0,
            code: r.code,
            minute_ms,
            received_at_ms: r.received_at_ms,
            topic: r.topic.clone(),
        })
    }
}

/// What stage A checks new inputs with (replaced by a reload).
#[derive(Clone)]
pub(super) struct IntakeSettings {
    pub(super) formulary: Arc<Formulary>,
    pub(super) rules: IntakeRules,
    /// `[limits] rejection_samples_per_minute` ([`RejectionSampler`]).
    pub(super) rejection_samples_per_minute: u32,
}

/// One input on its way from stage A to stage B.
pub(super) struct InFlight {
    pub(super) ack: AckToken,
    pub(super) kind: Pending,
}

/// An input's write: queued in the writer (in arrival order), or not
/// queued because the writer has stopped.
pub(super) type Write = Result<Queued, StoreError>;

/// What stage A decided, with the write it queued.
pub(super) enum Pending {
    Accept {
        op: WriteOp,
        write: Write,
        tracked: Box<TrackedInput>,
        topic: String,
        payload: Vec<u8>,
        received_at_ms: TimeMs,
    },
    Reject {
        op: WriteOp,
        write: Write,
        /// `None` for a rejection counted, not stored in full
        /// ([`RejectionSampler`]): not announced on `rejected` one by one.
        notice: Option<RejectedNotice>,
    },
}

/// Stage A's edges.
pub(super) struct StageA {
    /// Inputs from the ingest connection, in arrival order.
    pub(super) deliveries: mpsc::Receiver<Incoming>,
    /// Inputs made by the daemon's own HTTP listener (an alert acknowledged
    /// on the ward page, as an `alerts/{id}/commands` message): decided,
    /// stored and applied exactly like one from the broker.
    pub(super) local: mpsc::Receiver<Incoming>,
    /// The checks in force.
    pub(super) intake: watch::Receiver<IntakeSettings>,
    pub(super) writer: Writer,
    pub(super) metrics: Arc<Metrics>,
    /// The topic prefix inputs are parsed under.
    pub(super) prefix: String,
    pub(super) to_stage_b: mpsc::Sender<InFlight>,
}

/// Receive until `shutdown` is cancelled, the deliveries end, or stage B
/// has stopped.
pub(super) async fn run(a: &mut StageA, shutdown: &CancellationToken) {
    let mut rejection_log = RejectionLog::default();
    let mut sampler = RejectionSampler::default();
    let mut minute = tokio::time::interval(Duration::from_secs(60));
    minute.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    minute.tick().await;
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = minute.tick() => {
                rejection_log.minute_over();
                continue;
            }
            m = a.deliveries.recv() => match m {
                Some(m) => m,
                None => break,
            },
            Some(m) = a.local.recv() => m,
        };
        // Unacknowledged from here until stage B is done with it (lag).
        a.metrics.input_received(incoming.received_at_ms);
        let settings = a.intake.borrow().clone();
        let decision = if incoming.qos0 {
            // The contract: every input is published at QoS 1. Refused
            // before it is parsed.
            intake::reject(
                &incoming.topic,
                &incoming.payload,
                incoming.received_at_ms,
                Rejection::new(
                    ErrorCode::WrongQos,
                    None,
                    "published at QoS 0; the contract requires QoS 1 (an input must be \
                     acknowledged once stored)",
                ),
            )
        } else {
            intake::intake_with(
                &a.prefix,
                &incoming.topic,
                &incoming.payload,
                incoming.received_at_ms,
                &settings.rules,
                &settings.formulary,
            )
        };
        let kind = match decision {
            Intake::Accept {
                record,
                topic,
                input,
            } => {
                let op = WriteOp::Input(*record);
                // Queued here, in arrival order; stage B waits for the commit.
                let write = a.writer.enqueue(op.clone()).await;
                Pending::Accept {
                    op,
                    write,
                    tracked: Box::new(TrackedInput {
                        seq: 0,
                        topic,
                        input: *input,
                    }),
                    topic: incoming.topic.clone(),
                    payload: incoming.payload.to_vec(),
                    received_at_ms: incoming.received_at_ms,
                }
            }
            Intake::Reject { record, notice } => {
                rejection_log.rejected(&record);
                // The retained copy of a message is delivered again at
                // every (re)subscription: stored once.
                let (op, notice) = if incoming.retain {
                    (WriteOp::RejectedRetained(record), Some(notice))
                } else if let Some(count) =
                    sampler.count_instead(&record, settings.rejection_samples_per_minute)
                {
                    (WriteOp::RejectionCounted(count), None)
                } else {
                    (WriteOp::Rejected(record), Some(notice))
                };
                let write = a.writer.enqueue(op.clone()).await;
                Pending::Reject { op, write, notice }
            }
        };
        if a.to_stage_b
            .send(InFlight {
                ack: incoming.ack,
                kind,
            })
            .await
            .is_err()
        {
            error!("the apply stage stopped; stopping intake");
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn rejected(topic: &str, code: ErrorCode, at_ms: TimeMs) -> RejectedRecord {
        RejectedRecord {
            topic: topic.to_owned(),
            received_at_ms: at_ms,
            code,
            field: None,
            message: String::new(),
            payload: Vec::new(),
        }
    }

    #[test]
    fn repeats_beyond_the_samples_of_a_minute_are_counted() {
        let mut s = RejectionSampler::default();
        // A whole minute (1.8e12 ms is one: 30,000,000 min).
        let t0: i64 = 1_800_000_000_000;
        let pump = "dt/v1/devices/pump-1/events";
        let n = 10;
        let counted: Vec<bool> = (0..n + 5)
            .map(|i| {
                s.count_instead(&rejected(pump, ErrorCode::TooLarge, t0 + i as i64), 10)
                    .is_some()
            })
            .collect();
        assert_eq!(counted.iter().filter(|c| !**c).count(), n);
        assert!(counted[n..].iter().all(|c| *c));
        // Another code, another source: samples of their own.
        assert!(s
            .count_instead(&rejected(pump, ErrorCode::InvalidJson, t0), 10)
            .is_none());
        assert!(s
            .count_instead(
                &rejected("dt/v1/devices/pump-2/events", ErrorCode::TooLarge, t0),
                10
            )
            .is_none());
        let c = s
            .count_instead(&rejected(pump, ErrorCode::TooLarge, t0 + 59_999), 10)
            .unwrap();
        assert_eq!((c.source.as_str(), c.minute_ms), ("devices/pump-1", t0));
        // The next minute: samples again.
        assert!(s
            .count_instead(&rejected(pump, ErrorCode::TooLarge, t0 + 60_000), 10)
            .is_none());
    }
}
