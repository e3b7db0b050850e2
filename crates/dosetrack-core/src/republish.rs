//! When each tracked patient's periodic state is republished.
//!
//! The contract wants a state per tracked patient at least every
//! `state.interval_s`. Republishing every patient in one burst at each
//! interval makes, at 10,000 patients, a spike of ~10,000 serialised states
//! (tens of MiB in flight to the broker and the store at once) and a CPU
//! burst every minute. Instead the interval is cut into `slots` equal ticks
//! (of at least [`MIN_PERIOD`]: 6 of 10 s at the default 60 s)
//! and each patient has a fixed slot, from a stable hash of their id: every
//! tick republishes only the patients of its slot, so each patient is still
//! republished exactly once per interval, and the work and memory of a tick
//! are 1/`slots` of the burst.
//!
//! Pure: ids in, slots out. The daemon (`stage_b`) owns the timer.

use std::time::Duration;

/// At most this many slots per interval.
pub const MAX_SLOTS: u32 = 60;
/// A tick at most this often: each tick is one store transaction (fsync)
/// and one pass over the patients, so ticks of a second cost more CPU than
/// they save (measured at 10,000 patients, `docs/reliability.md`); at the
/// default 60 s interval this gives 6 slots of 10 s.
pub const MIN_PERIOD: Duration = Duration::from_secs(10);

/// The spread of one state interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spread {
    slots: u32,
    period: Duration,
    /// The slot the next tick serves.
    next: u32,
}

impl Spread {
    /// `interval` cut into one slot per whole [`MIN_PERIOD`] of it, at
    /// least 1 and at most [`MAX_SLOTS`] (an interval under 20 s is one
    /// slot: every patient at each tick, as before the spread).
    pub fn new(interval: Duration) -> Spread {
        let n = (interval.as_secs() / MIN_PERIOD.as_secs()).clamp(1, u64::from(MAX_SLOTS));
        let slots = u32::try_from(n).unwrap_or(MAX_SLOTS);
        Spread {
            slots,
            period: interval / slots,
            next: 0,
        }
    }

    /// How many slots the interval has.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Time between two ticks (`interval / slots`).
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The slot a tick serves now; the next call serves the next slot.
    pub fn advance(&mut self) -> u32 {
        let slot = self.next;
        self.next = (self.next + 1) % self.slots;
        slot
    }

    /// The slot of a patient: FNV-1a (64 bit) of the id, modulo the slots.
    /// Stable across runs, builds and platforms.
    pub fn slot_of(&self, patient_id: &str) -> u32 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in patient_id.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // The remainder is below `slots` (≤ 60): it fits.
        u32::try_from(h % u64::from(self.slots)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_interval_is_cut_into_ten_second_slots_up_to_sixty() {
        for (interval_s, slots, period_ms) in [
            (1, 1, 1_000),
            (5, 1, 5_000),
            (19, 1, 19_000),
            (60, 6, 10_000),
            (90, 9, 10_000),
            (300, 30, 10_000),
            (3_600, 60, 60_000),
        ] {
            let s = Spread::new(Duration::from_secs(interval_s));
            assert_eq!(s.slots(), slots, "{interval_s} s");
            assert_eq!(
                s.period(),
                Duration::from_millis(period_ms),
                "{interval_s} s"
            );
            // A whole interval of ticks covers it exactly.
            assert_eq!(s.period() * s.slots(), Duration::from_secs(interval_s));
        }
    }

    /// Over any `slots` consecutive ticks every patient is served exactly
    /// once (so at least once per interval, as the contract wants), and the
    /// slots are evenly filled: at 10,000 patients no tick carries more than
    /// 1.5 times its share.
    #[test]
    fn every_patient_once_per_interval_and_the_ticks_evenly_loaded() {
        // 60 slots: the finest spread, the hardest to fill evenly.
        let mut s = Spread::new(Duration::from_secs(600));
        let ids: Vec<String> = (0..10_000).map(|i| format!("P-{i:05}")).collect();
        // Start anywhere: 17 ticks in.
        for _ in 0..17 {
            s.advance();
        }
        let mut served: BTreeMap<&str, u32> = BTreeMap::new();
        let mut per_tick = Vec::new();
        for _ in 0..s.slots() {
            let slot = s.advance();
            let due: Vec<&str> = ids
                .iter()
                .filter(|p| s.slot_of(p) == slot)
                .map(String::as_str)
                .collect();
            per_tick.push(due.len());
            for p in due {
                *served.entry(p).or_default() += 1;
            }
        }
        assert_eq!(served.len(), ids.len(), "every patient served");
        assert!(served.values().all(|n| *n == 1), "each exactly once");
        let share = ids.len() as f64 / f64::from(s.slots());
        let max = *per_tick.iter().max().unwrap() as f64;
        assert!(max <= 1.5 * share, "a tick carries {max}, share {share:.0}");
    }

    #[test]
    fn a_patient_keeps_their_slot() {
        let s = Spread::new(Duration::from_secs(60));
        // FNV-1a is fixed: the same id, the same slot, in every run.
        assert_eq!(s.slot_of("P-1"), s.slot_of("P-1"));
        assert_eq!(Spread::new(Duration::from_secs(1)).slot_of("P-1"), 0);
        let slots: std::collections::BTreeSet<u32> =
            (0..500).map(|i| s.slot_of(&format!("bed-{i}"))).collect();
        assert_eq!(slots.len(), 6, "ids spread over every slot");
        let s = Spread::new(Duration::from_secs(600));
        let slots: std::collections::BTreeSet<u32> =
            (0..500).map(|i| s.slot_of(&format!("bed-{i}"))).collect();
        assert_eq!(slots.len(), 60, "ids spread over every slot");
    }
}
