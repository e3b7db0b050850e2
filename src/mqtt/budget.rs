//! The ingest's byte budget: how much received input the daemon holds at
//! once, from the socket to the acknowledgement.
//!
//! Every received PUBLISH takes a [`Held`] share of the budget (its payload,
//! its topic and a fixed [`PER_MESSAGE_BYTES`] for the structures that carry
//! it) in the driver, the moment rumqttc yields it. The share travels with
//! the input's [`super::AckToken`] through stage A, the store's queue and
//! stage B, and is given back when the token is spent or dropped, i.e. when
//! the service is done with the input. While the budget is used up the
//! driver does not poll the connection: the daemon stops reading, TCP's
//! window fills and the broker holds (or, for QoS 0, drops per its own
//! limits) what comes next. Back-pressure by not reading, never by
//! buffering.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

/// Charged per message on top of its topic and payload: the `Incoming`,
/// its token, the store op and the records built from it (measured order
/// of magnitude, so that a flood of tiny messages is bounded too).
pub const PER_MESSAGE_BYTES: usize = 1024;

/// The shared budget.
#[derive(Debug)]
pub struct Budget {
    max_bytes: usize,
    held: AtomicUsize,
    room: Notify,
}

impl Budget {
    pub fn new(max_bytes: usize) -> Arc<Budget> {
        Arc::new(Budget {
            max_bytes: max_bytes.max(1),
            held: AtomicUsize::new(0),
            room: Notify::new(),
        })
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// The budget.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Is the budget used up (stop reading)?
    pub fn full(&self) -> bool {
        self.held() >= self.max_bytes
    }

    /// Take `bytes` (always granted: the message is already read; the
    /// driver reads no more until enough is given back).
    pub fn take(self: &Arc<Self>, bytes: usize) -> Held {
        self.held.fetch_add(bytes, Ordering::AcqRel);
        Held {
            budget: Arc::clone(self),
            bytes,
        }
    }

    /// Wait until the budget has room.
    pub async fn room(&self) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            // Registered before the check: a release in between wakes it.
            notified.as_mut().enable();
            if !self.full() {
                return;
            }
            notified.await;
        }
    }
}

/// One message's share of the [`Budget`], given back on drop.
pub struct Held {
    budget: Arc<Budget>,
    bytes: usize,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Held({} bytes)", self.bytes)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let before = self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
        if before >= self.budget.max_bytes && before - self.bytes < self.budget.max_bytes {
            self.budget.room.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_budget_has_room_again_when_enough_is_given_back() {
        let b = Budget::new(100);
        let a = b.take(60);
        assert!(!b.full());
        let c = b.take(60);
        assert!(b.full());
        assert_eq!(b.held(), 120);
        let waiter = tokio::spawn({
            let b = Arc::clone(&b);
            async move { b.room().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "no room while full");
        drop(a);
        tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("room after a release")
            .unwrap();
        drop(c);
        assert_eq!(b.held(), 0);
    }
}
