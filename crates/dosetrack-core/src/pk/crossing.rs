//! What a forecast looks for — which output ([`Output`]), which way it
//! crosses ([`Direction`]), the crossing itself ([`Crossing`]) — and the
//! per-solution memo of recent answers ([`CrossingMemo`]).
//!
//! The types live apart from the search ([`super::forecast`]) so that a
//! [`super::solution::Solution`] can hold its memo without the solution
//! depending on the search that extends it.

use crate::vocab::TimeMs;
use serde::Serialize;

/// Which concentration to watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    Cp,
    Ce,
}

/// Which way a crossing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From below the level to above it.
    Rising,
    /// From above the level to below it.
    Falling,
}

/// A crossing: the first millisecond on the new side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Crossing {
    pub at_ms: TimeMs,
    pub direction: Direction,
}

/// Recent [`Solution::next_crossing`] answers of one solution: a pure
/// memo (the same answer as searching again), emptied whenever the
/// solution changes ([`Solution::resume_from`]). The state message and the
/// alert rules ask for the same crossings (Ce's floor and ceiling from
/// "now" over the forecast horizon) of the same patient at the same moment.
#[derive(Default)]
pub(super) struct CrossingMemo(std::sync::Mutex<Vec<(CrossingKey, Option<Crossing>)>>);

/// (output, level bits, from, horizon).
pub(super) type CrossingKey = (Output, u64, TimeMs, TimeMs);

/// Most answers one solution keeps (the oldest goes first).
const CROSSING_MEMO_MAX: usize = 8;

impl CrossingMemo {
    pub(super) fn get(&self, key: &CrossingKey) -> Option<Option<Crossing>> {
        let memo = self.0.lock().ok()?;
        memo.iter().find(|(k, _)| k == key).map(|(_, c)| *c)
    }

    pub(super) fn put(&self, key: CrossingKey, crossing: Option<Crossing>) {
        if let Ok(mut memo) = self.0.lock() {
            if memo.len() >= CROSSING_MEMO_MAX {
                memo.remove(0);
            }
            memo.push((key, crossing));
        }
    }

    pub(super) fn clear(&mut self) {
        *self = CrossingMemo::default();
    }
}

impl Clone for CrossingMemo {
    fn clone(&self) -> Self {
        CrossingMemo(std::sync::Mutex::new(
            self.0.lock().map(|m| m.clone()).unwrap_or_default(),
        ))
    }
}

impl std::fmt::Debug for CrossingMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not part of the solution's value.
        f.write_str("CrossingMemo")
    }
}
