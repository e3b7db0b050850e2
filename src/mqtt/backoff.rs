//! The reconnect delay: capped exponential back-off with jitter.
//!
//! rumqttc has no reconnect back-off of its own: after an error the next
//! `poll()` reconnects at once (rumqttc issues #703, #918). This module owns
//! the delay between attempts: 100 ms doubling per failed attempt up to
//! 30 s, each delay drawn uniformly from [75 %, 100 %] of its step so that
//! many clients restarting together spread out. Because the lower bound of
//! step n+1 (1.5 × step n) is above the upper bound of step n, delays grow
//! strictly until the cap. Deterministic for a given seed (tests).

use std::time::Duration;

/// Capped exponential back-off with jitter; see the module docs.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// Failed attempts since the last reset.
    attempt: u32,
    /// splitmix64 state.
    rng: u64,
}

impl Backoff {
    /// First delay.
    pub const INITIAL: Duration = Duration::from_millis(100);
    /// Largest delay.
    pub const MAX: Duration = Duration::from_secs(30);

    /// A back-off seeded from the clock and this value's address.
    pub fn new() -> Backoff {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let here = &nanos as *const u64 as u64;
        Backoff::with_seed(nanos ^ here.rotate_left(32))
    }

    /// A back-off whose jitter sequence is fixed by `seed`.
    pub fn with_seed(seed: u64) -> Backoff {
        Backoff {
            initial: Backoff::INITIAL,
            max: Backoff::MAX,
            attempt: 0,
            rng: seed,
        }
    }

    /// The delay before the next attempt; each call counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step();
        self.attempt = self.attempt.saturating_add(1);
        // Uniform in [0.75, 1.0): 53 random bits as a fraction.
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        step.mul_f64(0.75 + 0.25 * unit)
    }

    /// Start again from the first delay (after a connection that held).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Failed attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The undithered delay of the current attempt: initial × 2^attempt,
    /// capped.
    fn step(&self) -> Duration {
        // 2^9 × 100 ms = 51.2 s is already past the cap.
        let doublings = self.attempt.min(16);
        self.initial.saturating_mul(1u32 << doublings).min(self.max)
    }

    fn next_u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1000.0
    }

    #[test]
    fn doubles_from_100_ms_within_the_jitter_band_up_to_30_s() {
        let mut b = Backoff::with_seed(7);
        let mut step = 100.0;
        for _ in 0..20 {
            let d = ms(b.next_delay());
            assert!(
                d >= 0.75 * step - 1e-6 && d < step,
                "{d} ms for step {step}"
            );
            step = (step * 2.0).min(30_000.0);
        }
        // At the cap every delay stays in [22.5 s, 30 s).
        for _ in 0..100 {
            let d = b.next_delay();
            assert!(d >= Duration::from_millis(22_500) && d < Backoff::MAX);
        }
    }

    #[test]
    fn delays_grow_strictly_until_the_cap() {
        for seed in 0..200 {
            let mut b = Backoff::with_seed(seed);
            let mut prev = Duration::ZERO;
            for _ in 0..8 {
                // 100 ms .. 12.8 s: all below the cap.
                let d = b.next_delay();
                assert!(d > prev, "seed {seed}: {d:?} after {prev:?}");
                prev = d;
            }
        }
    }

    #[test]
    fn at_most_six_attempts_in_the_first_three_seconds() {
        // Attempt k happens after the sum of the first k-1 delays.
        for seed in 0..200 {
            let mut b = Backoff::with_seed(seed);
            let mut t = Duration::ZERO;
            let mut attempts = 1;
            loop {
                t += b.next_delay();
                if t > Duration::from_secs(3) {
                    break;
                }
                attempts += 1;
            }
            assert!((4..=6).contains(&attempts), "seed {seed}: {attempts}");
        }
    }

    #[test]
    fn same_seed_same_delays_other_seed_other_delays() {
        let run = |seed| {
            let mut b = Backoff::with_seed(seed);
            (0..10).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn reset_starts_again_from_100_ms() {
        let mut b = Backoff::with_seed(1);
        for _ in 0..12 {
            b.next_delay();
        }
        assert_eq!(b.attempts(), 12);
        assert!(b.next_delay() >= Duration::from_millis(22_500));
        b.reset();
        assert_eq!(b.attempts(), 0);
        let d = b.next_delay();
        assert!(d >= Duration::from_millis(75) && d < Duration::from_millis(100));
    }

    #[test]
    fn saturates_instead_of_overflowing() {
        let mut b = Backoff::with_seed(3);
        b.attempt = u32::MAX - 1;
        assert!(b.next_delay() <= Backoff::MAX);
        assert!(b.next_delay() <= Backoff::MAX);
        assert_eq!(b.attempts(), u32::MAX);
    }
}
