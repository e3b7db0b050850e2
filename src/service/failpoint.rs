//! Crashes injected by tests at two points of the alert path, to prove
//! that nothing is lost or published twice when the process dies there;
//! and one refusal: `outbox_refuse_retained` makes the outbox treat every
//! retained row (an active list) as refused by the broker connection
//! (too large), to prove a refused row is moved aside and delays nothing.
//!
//! Only with the cargo feature `failpoints` (which `cargo test` turns on
//! through the package's dev-dependency on itself; release builds and the
//! `.deb` do not have it): then `DOSETRACK_FAILPOINT` arms one point and
//! the process aborts there, as `kill -9` would. Without the feature,
//! [`Failpoints`] is empty, [`Failpoints::hit`] does nothing, and the
//! variable is never read.

/// Where a crash can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failpoint {
    /// After an alert write is built from committed inputs, before it is
    /// committed (`alerts_before_commit`).
    AlertsBeforeCommit,
    /// After alert rows are committed to the outbox, before publishing
    /// (`outbox_before_publish`).
    OutboxBeforePublish,
    /// Not a crash: every retained outbox row is refused as too large
    /// (`outbox_refuse_retained`).
    OutboxRefuseRetained,
}

/// The armed failpoint, if any (none without the `failpoints` feature).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Failpoints {
    #[cfg(feature = "failpoints")]
    armed: Option<Failpoint>,
}

#[cfg(feature = "failpoints")]
impl Failpoints {
    /// From the `DOSETRACK_FAILPOINT` environment variable.
    pub(super) fn from_env() -> Failpoints {
        let armed = match std::env::var("DOSETRACK_FAILPOINT").ok().as_deref() {
            None => None,
            Some("alerts_before_commit") => Some(Failpoint::AlertsBeforeCommit),
            Some("outbox_before_publish") => Some(Failpoint::OutboxBeforePublish),
            Some("outbox_refuse_retained") => Some(Failpoint::OutboxRefuseRetained),
            Some(other) => {
                tracing::warn!(failpoint = other, "unknown DOSETRACK_FAILPOINT ignored");
                None
            }
        };
        Failpoints { armed }
    }

    /// Whether `here` is armed (for a failpoint that does not abort).
    pub(super) fn armed(self, here: Failpoint) -> bool {
        self.armed == Some(here)
    }

    /// Abort the process if `here` is armed.
    pub(super) fn hit(self, here: Failpoint) {
        if self.armed == Some(here) {
            tracing::error!(failpoint = ?here, "failpoint reached: aborting (test only)");
            std::process::abort();
        }
    }
}

#[cfg(not(feature = "failpoints"))]
impl Failpoints {
    /// None armed: this build has no failpoints.
    pub(super) fn from_env() -> Failpoints {
        Failpoints {}
    }

    /// Nothing (this build has no failpoints).
    #[inline(always)]
    pub(super) fn hit(self, _here: Failpoint) {}

    /// Never (this build has no failpoints).
    #[inline(always)]
    pub(super) fn armed(self, _here: Failpoint) -> bool {
        false
    }
}
