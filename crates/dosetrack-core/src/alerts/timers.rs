//! The timer queue: each scope's next interesting moment.
//!
//! Concentrations change with time alone, so every patient has a next
//! moment worth a look (a predicted crossing entering the lead time, a delay
//! expiring, an escalation, a device deadline). The queue keeps one entry
//! per scope; the daemon sleeps until the earliest and evaluates only the
//! scopes due. Cost grows with events and crossings, not patients × ticks.

use super::Scope;
use crate::vocab::TimeMs;
use std::collections::{BTreeSet, HashMap};

/// One wake-up time per scope, ordered.
#[derive(Debug, Clone, Default)]
pub struct TimerQueue {
    queue: BTreeSet<(TimeMs, Scope)>,
    at: HashMap<Scope, TimeMs>,
}

impl TimerQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Set (or with `None`, remove) the scope's wake-up time.
    pub fn set(&mut self, scope: &Scope, at_ms: Option<TimeMs>) {
        if let Some(old) = self.at.remove(scope) {
            self.queue.remove(&(old, scope.clone()));
        }
        if let Some(t) = at_ms {
            self.queue.insert((t, scope.clone()));
            self.at.insert(scope.clone(), t);
        }
    }

    /// The scope's wake-up time, if set.
    pub fn at(&self, scope: &Scope) -> Option<TimeMs> {
        self.at.get(scope).copied()
    }

    /// The earliest wake-up time.
    pub fn next(&self) -> Option<TimeMs> {
        self.queue.first().map(|(t, _)| *t)
    }

    /// Remove and return every scope due at `now_ms`.
    pub fn pop_due(&mut self, now_ms: TimeMs) -> Vec<Scope> {
        let mut due = Vec::new();
        while let Some((t, _)) = self.queue.first() {
            if *t > now_ms {
                break;
            }
            if let Some((_, s)) = self.queue.pop_first() {
                self.at.remove(&s);
                due.push(s);
            }
        }
        due
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str) -> Scope {
        Scope::Patient(id.to_owned())
    }

    #[test]
    fn one_entry_per_scope_earliest_first() {
        let mut q = TimerQueue::new();
        q.set(&p("a"), Some(50));
        q.set(&p("b"), Some(20));
        q.set(&p("a"), Some(10)); // replaces 50
        assert_eq!(q.len(), 2);
        assert_eq!(q.next(), Some(10));
        assert_eq!(q.pop_due(15), vec![p("a")]);
        assert_eq!(q.next(), Some(20));
        q.set(&p("b"), None);
        assert!(q.is_empty());
        assert_eq!(q.pop_due(1000), Vec::<Scope>::new());
    }
}
