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
//! [`Clock::scaled`] is the demo's sped-up clock: it starts at a chosen time
//! and runs `speedup` times faster than the monotonic clock (`Instant`), and
//! every wait on it lasts the simulated span divided by the speedup.
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
    /// Sped up: `origin_ms` at `wall_origin`, then `speedup` ms per
    /// elapsed monotonic ms.
    Scaled(Arc<Scaled>),
}

/// A sped-up clock's anchor.
#[derive(Debug)]
struct Scaled {
    origin_ms: TimeMs,
    wall_origin: std::time::Instant,
    /// Finite, > 0.
    speedup: f64,
}

impl Scaled {
    fn now_ms(&self) -> TimeMs {
        let elapsed_ms = self.wall_origin.elapsed().as_secs_f64() * 1000.0;
        self.origin_ms
            .saturating_add((elapsed_ms * self.speedup).floor() as TimeMs)
    }

    /// The real time `span_ms` of this clock takes (rounded up).
    fn real(&self, span_ms: TimeMs) -> Duration {
        let ms = (span_ms.max(0) as f64 / self.speedup).ceil();
        Duration::from_secs_f64(ms.min(1e12) / 1000.0)
    }
}

/// A speedup that [`Clock::scaled`] cannot use.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("a clock's speedup must be a finite number greater than 0, not {0}")]
pub struct SpeedupError(pub f64);

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock {
            source: Source::System,
        }
    }

    /// A sped-up clock: it reads `origin_ms` now and then runs `speedup`
    /// times faster than the monotonic clock (`Instant`, so a wall-clock
    /// step does not move it); a wait on it of `x` ms lasts `x / speedup`
    /// real ms. The demo's clock (`crate::sim::demo`).
    pub fn scaled(origin_ms: TimeMs, speedup: f64) -> Result<Clock, SpeedupError> {
        if !(speedup.is_finite() && speedup > 0.0) {
            return Err(SpeedupError(speedup));
        }
        Ok(Clock {
            source: Source::Scaled(Arc::new(Scaled {
                origin_ms,
                wall_origin: std::time::Instant::now(),
                speedup,
            })),
        })
    }

    /// Milliseconds since the Unix epoch (negative before 1970).
    pub fn now_ms(&self) -> TimeMs {
        match &self.source {
            Source::System => system_now_ms(),
            Source::Manual(now) => *now.borrow(),
            Source::Scaled(s) => s.now_ms(),
        }
    }

    /// How much this clock advances while `real` passes on the monotonic
    /// clock: `real` itself, times the speedup for a sped-up clock (a
    /// manual clock counts as 1×). For periods the shell keeps on
    /// `tokio::time` but compares with times on this clock.
    pub fn span_of_real(&self, real: Duration) -> TimeMs {
        let ms = TimeMs::try_from(real.as_millis()).unwrap_or(TimeMs::MAX);
        match &self.source {
            Source::System | Source::Manual(_) => ms,
            Source::Scaled(s) => (ms as f64 * s.speedup).min(TimeMs::MAX as f64) as TimeMs,
        }
    }

    /// How long `span` of this clock lasts on the monotonic clock: `span`
    /// itself, divided by the speedup for a sped-up clock (a manual clock
    /// counts as 1×). For a periodic tick whose period is a span of this
    /// clock (the history grid).
    pub fn real_of_span(&self, span: Duration) -> Duration {
        match &self.source {
            Source::System | Source::Manual(_) => span,
            Source::Scaled(s) => s.real(TimeMs::try_from(span.as_millis()).unwrap_or(TimeMs::MAX)),
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
            Source::Scaled(s) => loop {
                // Rounded up, so one sleep normally suffices; the loop
                // makes "reads at least the deadline" hold regardless.
                let wait_ms = deadline_ms.saturating_sub(s.now_ms());
                if wait_ms <= 0 {
                    break;
                }
                tokio::time::sleep(s.real(wait_ms)).await;
            },
        }
    }

    /// Wait for `period` to pass on this clock.
    pub async fn sleep(&self, period: Duration) {
        match &self.source {
            Source::System => tokio::time::sleep(period).await,
            Source::Manual(_) | Source::Scaled(_) => {
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

    #[test]
    fn a_scaled_clock_starts_at_its_origin_and_runs_at_its_speedup() {
        let origin = 1_800_000_000_000;
        let clock = Clock::scaled(origin, 60.0).unwrap();
        let start = std::time::Instant::now();
        let first = clock.now_ms();
        assert!((origin..origin + 1_000).contains(&first), "{first}");
        std::thread::sleep(Duration::from_millis(200));
        let elapsed_ms = start.elapsed().as_millis() as i64;
        let moved = clock.now_ms() - origin;
        // 200 ms real at 60× is 12 s simulated, never more than elapsed × 60.
        assert!(moved >= 12_000, "{moved}");
        assert!(moved <= (elapsed_ms + 1) * 60, "{moved} {elapsed_ms}");
        // Clones share the anchor.
        let twin = clock.clone();
        assert!((twin.now_ms() - clock.now_ms()).abs() < 1_000);
    }

    #[test]
    fn a_scaled_clock_refuses_a_speedup_it_cannot_use() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(Clock::scaled(0, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn spans_convert_between_real_and_clock_time() {
        let clock = Clock::scaled(0, 60.0).unwrap();
        assert_eq!(clock.span_of_real(Duration::from_secs(2)), 120_000);
        assert_eq!(
            clock.real_of_span(Duration::from_secs(60)),
            Duration::from_secs(1)
        );
        let system = Clock::system();
        assert_eq!(system.span_of_real(Duration::from_secs(2)), 2_000);
        assert_eq!(
            system.real_of_span(Duration::from_secs(60)),
            Duration::from_secs(60)
        );
    }

    #[tokio::test]
    async fn a_wait_on_a_scaled_clock_lasts_the_span_divided_by_the_speedup() {
        let clock = Clock::scaled(1_000_000, 100.0).unwrap();
        let start = std::time::Instant::now();
        // 30 simulated seconds at 100× is 300 ms real.
        let deadline = clock.now_ms() + 30_000;
        clock.sleep_until_ms(deadline).await;
        let took = start.elapsed();
        assert!(clock.now_ms() >= deadline);
        assert!(took >= Duration::from_millis(290), "{took:?}");
        assert!(took < Duration::from_millis(1_500), "{took:?}");
        // A period: 6 simulated seconds, 60 ms real.
        let before = clock.now_ms();
        let start = std::time::Instant::now();
        clock.sleep(Duration::from_secs(6)).await;
        assert!(clock.now_ms() - before >= 6_000);
        assert!(
            start.elapsed() >= Duration::from_millis(55),
            "{:?}",
            start.elapsed()
        );
        // Already due: at once.
        let start = std::time::Instant::now();
        clock.sleep_until_ms(0).await;
        assert!(start.elapsed() < Duration::from_millis(50));
    }
}
