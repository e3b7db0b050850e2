//! Stage A (receive): take each message from the ingest connection in
//! arrival order, decide on it with [`intake`] (pure), and
//! submit its write to the store at once — so that concurrent inputs share
//! a commit — then hand it to stage B ([`InFlight`]) with its
//! acknowledgement token, which stage B alone spends.
//!
//! Stage A checks with the drug file and limits in force
//! ([`IntakeSettings`]; a reload replaces them).

use crate::intake::{self, Intake, IntakeRules, RejectedNotice};
use crate::mqtt::{AckToken, Incoming};
use crate::patient::Formulary;
use crate::service::metrics::Metrics;
use crate::store::{Queued, StoreError, WriteOp, Writer};
use crate::tracker::TrackedInput;
use crate::vocab::TimeMs;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

/// What stage A checks new inputs with (replaced by a reload).
#[derive(Clone)]
pub(super) struct IntakeSettings {
    pub(super) formulary: Arc<Formulary>,
    pub(super) rules: IntakeRules,
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
        notice: RejectedNotice,
    },
}

/// Stage A's edges.
pub(super) struct StageA {
    /// Inputs from the ingest connection, in arrival order.
    pub(super) deliveries: mpsc::Receiver<Incoming>,
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
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = a.deliveries.recv() => match m {
                Some(m) => m,
                None => break,
            },
        };
        // Unacknowledged from here until stage B is done with it (lag).
        a.metrics.input_received(incoming.received_at_ms);
        let settings = a.intake.borrow().clone();
        let decision = intake::intake_with(
            &a.prefix,
            &incoming.topic,
            &incoming.payload,
            incoming.received_at_ms,
            &settings.rules,
            &settings.formulary,
        );
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
                debug!(topic = %incoming.topic, code = record.code.as_str(), "rejected");
                // The retained copy of a message is delivered again at
                // every (re)subscription: stored once.
                let op = if incoming.retain {
                    WriteOp::RejectedRetained(record)
                } else {
                    WriteOp::Rejected(record)
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
