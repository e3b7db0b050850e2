//! The simulation's wall clock: the one place in `sim` that asks the
//! shell's system clock ([`crate::clock::Clock`]) for "now" (the simulated
//! ward's start, the demo's run tag and where its sped-up clock starts),
//! refusing a clock before 1970. The demo's "now" after that is its
//! scaled clock's.
//! Elapsed time, pacing and timeouts use the monotonic clock (`Instant`,
//! std's or tokio's) instead.

use crate::clock::Clock;
use crate::vocab::TimeMs;

/// The system clock is before 1970 or out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system clock is not usable (before 1970 or out of range)")]
pub struct ClockError;

/// The wall clock in ms since the epoch.
pub fn wall_clock_ms() -> Result<TimeMs, ClockError> {
    let now = Clock::system().now_ms();
    if (0..TimeMs::MAX).contains(&now) {
        Ok(now)
    } else {
        Err(ClockError)
    }
}
