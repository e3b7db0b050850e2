//! The live stream of the `[http]` listener (`GET /api/v1/stream`,
//! server-sent events): every published state and every alert lifecycle
//! message, as the daemon commits them, for the ward pages and other
//! consumers (`docs/http-api.md`, "Live").
//!
//! It owns the watcher that notices the changes, the bounded fan-out to
//! clients and the replay on reconnection:
//!
//! * **The watcher** reads the store's read side every [`POLL`] on a
//!   blocking thread with a read-only connection of its own (WAL): the
//!   published states whose time or length changed, the lifecycle messages
//!   after the last one seen. It never touches the ingest path; what it
//!   sees is committed.
//! * **Fan-out**: a `tokio::sync::broadcast` channel of [`CAPACITY`]
//!   events. Sending never waits; a client that falls more than that
//!   behind (a slow reader, a full socket) is dropped (its stream ends),
//!   never buffered without bound, and at most [`MAX_STREAMS`] streams are
//!   open at once.
//! * **Reconnection**: every event has an id `RUN-N` (`RUN`: this daemon
//!   run, `N`: a counter). A client reconnecting with `Last-Event-ID` gets
//!   the events after it from the last [`CAPACITY`] kept; when they are no
//!   longer kept, or the id is from another run, it gets a `resync` event
//!   (re-read `/api/v1/patients`) first.

use crate::clock::Clock;
use crate::store::Reader;
use axum::response::sse::{Event, KeepAlive, Sse};
use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How often the watcher reads the store.
pub(crate) const POLL: Duration = Duration::from_millis(250);

/// Events kept for replay, and the most a client may fall behind.
pub(crate) const CAPACITY: usize = 1024;

/// Most live streams open at once.
pub(crate) const MAX_STREAMS: usize = 32;

/// Most lifecycle messages read per poll.
const ALERTS_PER_POLL: usize = 256;

/// One event of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LiveEvent {
    pub n: u64,
    /// `state` or `alert`.
    pub kind: &'static str,
    /// The message as published (JSON).
    pub data: String,
}

/// The stream's shared end: the broadcast sender, the replay buffer and
/// the count of open streams.
pub(crate) struct Live {
    run: String,
    tx: broadcast::Sender<Arc<LiveEvent>>,
    recent: Mutex<VecDeque<Arc<LiveEvent>>>,
    streams: AtomicUsize,
}

/// What a client's `Last-Event-ID` asks for (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resume {
    /// No id: start from now.
    Fresh,
    /// Replay the events after `n` (all kept).
    After(u64),
    /// Cannot replay (another run, too old, malformed): resync.
    Resync,
}

/// Decide how to resume from `last_event_id`, given this run's id and the
/// oldest event still kept (pure).
pub(crate) fn resume(last_event_id: Option<&str>, run: &str, oldest_kept: Option<u64>) -> Resume {
    let Some(id) = last_event_id else {
        return Resume::Fresh;
    };
    let Some((r, n)) = id.rsplit_once('-') else {
        return Resume::Resync;
    };
    let Ok(n) = n.parse::<u64>() else {
        return Resume::Resync;
    };
    if r != run {
        return Resume::Resync;
    }
    match oldest_kept {
        // Nothing kept yet: nothing was missed only if nothing was sent.
        None if n == 0 => Resume::After(0),
        None => Resume::Resync,
        Some(oldest) if n + 1 >= oldest => Resume::After(n),
        Some(_) => Resume::Resync,
    }
}

impl Live {
    pub(crate) fn new(clock: &Clock) -> Arc<Live> {
        let (tx, _) = broadcast::channel(CAPACITY);
        Arc::new(Live {
            run: clock.now_ms().to_string(),
            tx,
            recent: Mutex::new(VecDeque::with_capacity(CAPACITY)),
            streams: AtomicUsize::new(0),
        })
    }

    fn publish(&self, kind: &'static str, data: String) {
        let Ok(mut recent) = self.recent.lock() else {
            return;
        };
        let n = recent.back().map_or(1, |e| e.n + 1);
        let ev = Arc::new(LiveEvent { n, kind, data });
        if recent.len() == CAPACITY {
            recent.pop_front();
        }
        recent.push_back(Arc::clone(&ev));
        // No receiver is not an error; sending never waits.
        let _ = self.tx.send(ev);
    }

    /// The SSE answer for a client, or `None` when [`MAX_STREAMS`] are
    /// open.
    pub(crate) fn stream(
        self: &Arc<Live>,
        last_event_id: Option<&str>,
    ) -> Option<Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>>> {
        if self
            .streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_STREAMS).then_some(n + 1)
            })
            .is_err()
        {
            return None;
        }
        let guard = StreamGuard(Arc::clone(self));
        // Subscribe before reading the replay buffer (under its lock, so
        // nothing published in between is missed or doubled).
        let (rx, first) = {
            let recent = match self.recent.lock() {
                Ok(r) => r,
                Err(p) => p.into_inner(),
            };
            let rx = self.tx.subscribe();
            let mut first: VecDeque<Event> = VecDeque::new();
            match resume(last_event_id, &self.run, recent.front().map(|e| e.n)) {
                Resume::Fresh => first.push_back(
                    Event::default()
                        .event("hello")
                        .id(format!("{}-{}", self.run, recent.back().map_or(0, |e| e.n)))
                        .data("{}"),
                ),
                Resume::After(n) => {
                    for e in recent.iter().filter(|e| e.n > n) {
                        first.push_back(self.event(e));
                    }
                }
                Resume::Resync => first.push_back(
                    Event::default()
                        .event("resync")
                        .id(format!("{}-{}", self.run, recent.back().map_or(0, |e| e.n)))
                        .data("{}"),
                ),
            }
            (rx, first)
        };
        let live = Arc::clone(self);
        let stream = futures_util::stream::unfold(
            (rx, first, guard, live),
            |(mut rx, mut first, guard, live)| async move {
                if let Some(e) = first.pop_front() {
                    return Some((Ok(e), (rx, first, guard, live)));
                }
                match rx.recv().await {
                    Ok(ev) => {
                        let e = live.event(&ev);
                        Some((Ok(e), (rx, first, guard, live)))
                    }
                    // Too far behind (or stopping): end the stream; the
                    // client reconnects with Last-Event-ID.
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        debug!(missed, "live stream client too slow: dropped");
                        None
                    }
                    Err(broadcast::error::RecvError::Closed) => None,
                }
            },
        );
        Some(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
    }

    fn event(&self, e: &LiveEvent) -> Event {
        Event::default()
            .event(e.kind)
            .id(format!("{}-{}", self.run, e.n))
            .data(e.data.as_str())
    }
}

/// Counts an open stream; dropped with it.
struct StreamGuard(Arc<Live>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the watcher has seen.
#[derive(Default)]
struct Seen {
    states: BTreeMap<String, (i64, i64)>,
    alert_seq: i64,
    started: bool,
}

/// Changes since `seen`, read from the store (blocking).
fn poll_once(reader: &Reader, seen: &mut Seen) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    match reader.state_marks() {
        Ok(marks) => {
            for m in marks {
                let mark = (m.time_ms, m.payload_len);
                if seen.states.get(&m.patient_id) == Some(&mark) {
                    continue;
                }
                seen.states.insert(m.patient_id.clone(), mark);
                if !seen.started {
                    continue;
                }
                match reader.published_state(&m.patient_id) {
                    Ok(Some(payload)) => out.push(("state", payload)),
                    Ok(None) => {}
                    Err(e) => warn!(error = %e, "live stream: a state not readable"),
                }
            }
        }
        Err(e) => warn!(error = %e, "live stream: states not readable"),
    }
    if !seen.started {
        match reader.last_alert_message_seq() {
            Ok(seq) => seen.alert_seq = seq,
            Err(e) => warn!(error = %e, "live stream: alerts not readable"),
        }
        seen.started = true;
        return out;
    }
    match reader.alert_messages_after(seen.alert_seq, ALERTS_PER_POLL) {
        Ok(rows) => {
            for r in rows {
                seen.alert_seq = r.seq;
                out.push(("alert", r.payload));
            }
        }
        Err(e) => warn!(error = %e, "live stream: alerts not readable"),
    }
    out
}

/// The watcher, until `stop`.
pub(crate) async fn watch(live: Arc<Live>, reader: Reader, stop: CancellationToken) {
    let reader = Arc::new(Mutex::new(reader));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (reader, seen) = (Arc::clone(&reader), Arc::clone(&seen));
        let changes = tokio::task::spawn_blocking(move || match (reader.lock(), seen.lock()) {
            (Ok(r), Ok(mut s)) => poll_once(&r, &mut s),
            _ => Vec::new(),
        })
        .await;
        match changes {
            Ok(changes) => {
                for (kind, data) in changes {
                    live.publish(kind, data);
                }
            }
            Err(e) => {
                warn!(error = %e, "live stream watcher failed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn resuming_replays_what_is_kept_else_resyncs() {
        assert_eq!(resume(None, "7", Some(1)), Resume::Fresh);
        assert_eq!(resume(Some("7-5"), "7", Some(1)), Resume::After(5));
        // The next one after the id is still kept.
        assert_eq!(resume(Some("7-9"), "7", Some(10)), Resume::After(9));
        // One was dropped in between.
        assert_eq!(resume(Some("7-8"), "7", Some(10)), Resume::Resync);
        assert_eq!(resume(Some("6-5"), "7", Some(1)), Resume::Resync);
        assert_eq!(resume(Some("garbage"), "7", Some(1)), Resume::Resync);
        assert_eq!(resume(Some("7-x"), "7", Some(1)), Resume::Resync);
        assert_eq!(resume(Some("7-0"), "7", None), Resume::After(0));
        assert_eq!(resume(Some("7-3"), "7", None), Resume::Resync);
    }

    #[tokio::test]
    async fn events_are_numbered_kept_and_bounded() {
        let live = Live::new(&crate::clock::ManualClock::new(1_000).clock());
        let mut rx = live.tx.subscribe();
        for i in 0..(CAPACITY + 5) {
            live.publish("state", format!("{{\"i\":{i}}}"));
        }
        {
            let recent = live.recent.lock().unwrap();
            assert_eq!(recent.len(), CAPACITY);
            assert_eq!(recent.front().unwrap().n, 6);
            assert_eq!(recent.back().unwrap().n, (CAPACITY + 5) as u64);
        }
        // The receiver fell behind: told so, never blocking the sender.
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Lagged(_))
        ));
    }

    #[test]
    fn streams_are_capped() {
        let live = Live::new(&crate::clock::ManualClock::new(1_000).clock());
        let open: Vec<_> = (0..MAX_STREAMS).map(|_| live.stream(None)).collect();
        assert!(open.iter().all(Option::is_some));
        assert!(live.stream(None).is_none());
        drop(open);
        assert_eq!(live.streams.load(Ordering::Acquire), 0);
        assert!(live.stream(None).is_some());
    }
}
