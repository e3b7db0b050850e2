//! The shell's one clock: "now" in milliseconds since the Unix epoch, and
//! waiting until a time on that clock.
//!
//! The core never reads a clock (it is given "now"); the shell reads this
//! one, passed in as a value: stage B (states, history, alert timers), the
//! outbox (when a row was published), the store's maintenance (the history
//! cutoff, its interval), the ingest connection (when an input was
//! received), the health and metrics listener (ages) and the technical
//! problems (since when). [`Clock::system`] is the wall clock; a test uses
//! [`ManualClock`] and moves time itself, so timers fire without sleeping.
//! A sped-up clock (the demo) is one more kind here, behind the same seam.
//!
//! What stays on the runtime's monotonic time (`tokio::time`): retry
//! back-offs, timeouts, the watchdog heartbeat and the periodic ticks
//! (their periods are durations, not times on this clock).

use crate::vocab::TimeMs;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A source of "now"; cheap to clone (clones share the source).
#[derive(Debug, Clone, Default)]
pub struct Clock {
    source: Source,
}

#[derive(Debug, Clone, Default)]
enum Source {
    /// The system's wall clock.
    #[default]
    System,
    /// Set by a [`ManualClock`].
    Manual(Arc<watch::Sender<TimeMs>>),
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock {
            source: Source::System,
        }
    }

    /// Milliseconds since the Unix epoch (negative before 1970).
    pub fn now_ms(&self) -> TimeMs {
        match &self.source {
            Source::System => system_now_ms(),
            Source::Manual(now) => *now.borrow(),
        }
    }

    /// Wait until this clock reads at least `deadline_ms` (at once if it
    /// already does).
    pub async fn sleep_until_ms(&self, deadline_ms: TimeMs) {
        match &self.source {
            Source::System => {
                let wait_ms = deadline_ms.saturating_sub(system_now_ms()).max(0);
                tokio::time::sleep(Duration::from_millis(wait_ms as u64)).await;
            }
            Source::Manual(now) => {
                let mut changes = now.subscribe();
                // The sender lives as long as this clock: `changed` fails
                // only if it is gone, and then time never moves again.
                while *changes.borrow_and_update() < deadline_ms {
                    if changes.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }

    /// Wait for `period` to pass on this clock.
    pub async fn sleep(&self, period: Duration) {
        match &self.source {
            Source::System => tokio::time::sleep(period).await,
            Source::Manual(_) => {
                let period_ms = TimeMs::try_from(period.as_millis()).unwrap_or(TimeMs::MAX);
                self.sleep_until_ms(self.now_ms().saturating_add(period_ms))
                    .await
            }
        }
    }
}

/// The system's wall clock, read directly (the one place it is).
fn system_now_ms() -> TimeMs {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => TimeMs::try_from(d.as_millis()).unwrap_or(TimeMs::MAX),
        // A clock before 1970: negative milliseconds.
        Err(e) => -TimeMs::try_from(e.duration().as_millis()).unwrap_or(TimeMs::MAX),
    }
}

/// A clock that moves only when told to (tests): [`ManualClock::clock`]
/// is the [`Clock`] to pass in; setting or advancing the time wakes every
/// wait that is then due.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<watch::Sender<TimeMs>>,
}

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: TimeMs) -> ManualClock {
        ManualClock {
            now: Arc::new(watch::Sender::new(start_ms)),
        }
    }

    /// The clock to pass in.
    pub fn clock(&self) -> Clock {
        Clock {
            source: Source::Manual(self.now.clone()),
        }
    }

    pub fn now_ms(&self) -> TimeMs {
        *self.now.borrow()
    }

    /// How many waits on this clock are pending (a test moves the time
    /// once the task it drives is waiting).
    pub fn waiting(&self) -> usize {
        self.now.receiver_count()
    }

    /// Set the time (it may go back, as a wall clock may).
    pub fn set_ms(&self, now_ms: TimeMs) {
        self.now.send_replace(now_ms);
    }

    /// Move the time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by_ms = TimeMs::try_from(by.as_millis()).unwrap_or(TimeMs::MAX);
        self.now.send_modify(|t| *t = t.saturating_add(by_ms));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_system_clock_reads_the_wall_clock() {
        let before = chrono::Utc::now().timestamp_millis();
        let now = Clock::system().now_ms();
        let after = chrono::Utc::now().timestamp_millis();
        assert!(before <= now && now <= after, "{before} {now} {after}");
        assert!(Clock::default().now_ms() >= now);
    }

    #[tokio::test]
    async fn a_manual_clock_wakes_a_wait_when_moved_past_it() {
        let manual = ManualClock::new(1_000);
        let clock = manual.clock();
        assert_eq!(clock.now_ms(), 1_000);
        // Already due: returns at once.
        clock.sleep_until_ms(1_000).await;

        let waiting = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep(Duration::from_secs(60)).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(manual.waiting(), 1);
        manual.advance(Duration::from_secs(59));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "woke a second early");
        manual.set_ms(61_000);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the wait did not end when the clock passed it")
            .unwrap();
        assert_eq!(clock.now_ms(), 61_000);
        assert_eq!(manual.now_ms(), 61_000);
        assert_eq!(manual.waiting(), 0);
    }
}
