//! The optional health and metrics listener of `dosetrack run` (`[http]`
//! `listen`; axum on hyper, HTTP/1.1, GET only but for the acknowledge,
//! which identifies its operator; loopback by default):
//!
//! * `GET /healthz`: JSON — both broker connections, whether the store's
//!   writer makes progress ([`writer_alive`], the watchdog's own
//!   judgement), the lag (inputs not yet acknowledged, the oldest one's age),
//!   the technical problems of the retained status ([`crate::service::health`]:
//!   database locked, full or failing) and the age of the last commit;
//!   **200** when healthy, **503** with the reasons otherwise ([`judge`],
//!   pure).
//! * `GET /metrics`: every metric of [`Metrics`] in the Prometheus text
//!   format 0.0.4.
//! * `GET /api/v1/…`: the JSON API of the ward ([`api`], documented in
//!   `docs/http-api.md`), each read on a blocking thread with the API's
//!   own read-only connection ([`api_read`]);
//! * `POST /api/v1/alerts/{id}/acknowledge`: an operator's acknowledgement
//!   from the ward page, off unless configured ([`acknowledge`]);
//! * the ward pages ([`pages`]) and the live stream ([`live`]).
//!
//! It owns binding the listener (a failure names `http.listen`; or taking
//! one the caller bound, [`from_std`]), serving
//! until stopped, and what each endpoint reads from the daemon's edges.
//!
//! Slow or hostile clients cannot exhaust the daemon's descriptors (its own
//! accept loop, hyper's HTTP/1 connection):
//!
//! * a request's headers must arrive within [`HEADER_READ_TIMEOUT`], and an
//!   idle keep-alive connection is closed after the same time (hyper starts
//!   that timer whenever it waits for a request head);
//! * at most [`MAX_CONNECTIONS`] connections are open. A new connection
//!   beyond that closes the oldest one that is not in the middle of a
//!   request (half-sent headers or idle keep-alive), so a flood of
//!   half-sent requests cannot keep `/healthz` out; when every open
//!   connection is busy, the new one is closed at once;
//! * an accept error (out of descriptors) is logged (at most once a minute)
//!   and retried after a short pause instead of spinning.

use crate::clock::Clock;
use crate::mqtt::{IngestHandle, Publisher};
use crate::service::acknowledge::{self, Acknowledge};
use crate::service::api::{self, json_response, ApiError};
use crate::service::forecast::{self, Models};
use crate::service::health::{self, Problem};
use crate::service::live::{self, Live};
use crate::service::metrics::{LagSnapshot, Metrics, Scraped, CONTENT_TYPE};
use crate::service::pages::{self, Page};
use crate::service::progress::writer_alive;
use crate::store::{Reader, Writer};
use crate::vocab::TimeMs;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How long `/healthz` waits for the writer thread to answer a ping.
const WRITER_PROBE: Duration = Duration::from_secs(1);

/// A request's headers must arrive within this time; an idle keep-alive
/// connection is closed after it too.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Most connections open at once (each is a descriptor; the unit's
/// `LimitNOFILE` leaves room for many more).
pub(crate) const MAX_CONNECTIONS: usize = 128;

/// How long to pause accepting after an accept error (out of descriptors).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The listener could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("http.listen {addr}: cannot listen: {source}")]
pub struct HttpError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Bind `addr` (at start, so that a port in use stops the start with a
/// clear error). A non-loopback address is logged as a warning.
pub(super) async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    if !addr.ip().is_loopback() {
        warn!(%addr, "http.listen is not a loopback address: /healthz, /metrics and the ward API (patient data) are reachable from the network without authentication; firewall the port or put an authenticating proxy in front");
    }
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError { addr, source })
}

/// Take a listener the caller bound (the demo, on port 0), for the
/// runtime.
pub(super) fn from_std(listener: std::net::TcpListener) -> Result<TcpListener, HttpError> {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    listener
        .set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(listener))
        .map_err(|source| HttpError { addr, source })
}

/// What the endpoints read.
pub(super) struct Endpoints {
    pub metrics: Arc<Metrics>,
    pub writer: Writer,
    pub publisher: Publisher,
    pub ingest: IngestHandle,
    /// A read-only connection, for the outbox rows not yet published.
    pub reader: Reader,
    /// The technical problems (the retained status's `problems`).
    pub health: health::Health,
    /// `/healthz` is unhealthy past this age of the oldest unacknowledged
    /// input (s).
    pub max_unacked_age_s: u64,
    /// "Now", for the ages.
    pub clock: Clock,
    /// A read-only connection of the JSON API and pages' own.
    pub api_reader: Reader,
    /// A patient's state older than this is stale (ms): the daemon
    /// republishes every `state.interval_s`.
    pub state_stale_after_ms: TimeMs,
    /// A read-only connection for the live stream's watcher.
    pub live_reader: Reader,
    /// The ward's time zone (`[http] time_zone`), for the pages.
    pub time_zone: String,
    /// Acknowledging from the page (`[http.acknowledge]`).
    pub acknowledge: Acknowledge,
    /// Each tracked patient's model (stage B keeps it current).
    pub models: Arc<Models>,
}

/// [`Endpoints`] shareable between requests.
struct Shared {
    metrics: Arc<Metrics>,
    writer: Writer,
    publisher: Publisher,
    ingest: IngestHandle,
    /// A SQLite connection is not `Sync`: one scrape at a time reads it.
    reader: Mutex<Reader>,
    health: health::Health,
    max_unacked_age_s: u64,
    clock: Clock,
    /// The API's reader, used on a blocking thread, one request at a time.
    api: Arc<Mutex<Reader>>,
    state_stale_after_ms: TimeMs,
    live: Arc<Live>,
    time_zone: String,
    acknowledge: Acknowledge,
    models: Arc<Models>,
}

/// Serve `listener` until `stop`.
pub(super) fn spawn(
    listener: TcpListener,
    endpoints: Endpoints,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let addr = listener.local_addr().ok();
    let live = Live::new(&endpoints.clock);
    tokio::spawn(live::watch(
        Arc::clone(&live),
        endpoints.live_reader,
        stop.clone(),
    ));
    let shared = Arc::new(Shared {
        metrics: endpoints.metrics,
        writer: endpoints.writer,
        publisher: endpoints.publisher,
        ingest: endpoints.ingest,
        reader: Mutex::new(endpoints.reader),
        health: endpoints.health,
        max_unacked_age_s: endpoints.max_unacked_age_s,
        clock: endpoints.clock,
        api: Arc::new(Mutex::new(endpoints.api_reader)),
        state_stale_after_ms: endpoints.state_stale_after_ms,
        live,
        time_zone: endpoints.time_zone,
        acknowledge: endpoints.acknowledge,
        models: endpoints.models,
    });
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/patients", get(api_patients))
        .route("/api/v1/patients/:id", get(api_patient))
        .route("/api/v1/patients/:id/series", get(api_series))
        .route("/api/v1/patients/:id/events", get(api_events))
        .route("/api/v1/patients/:id/forecast", get(api_forecast))
        .route("/api/v1/patients/:id/alerts", get(api_patient_alerts))
        .route("/api/v1/alerts", get(api_alerts))
        .route("/api/v1/alerts/:id/acknowledge", post(api_acknowledge))
        .route("/api/v1/stream", get(api_stream))
        .route("/", get(ward_page))
        .route("/patients/:id", get(patient_page))
        .route("/assets/:name", get(asset))
        .fallback(not_found)
        .with_state(shared);
    info!(
        addr = addr.map(tracing::field::display),
        max_connections = MAX_CONNECTIONS,
        header_read_timeout_s = HEADER_READ_TIMEOUT.as_secs(),
        "health and metrics listener started (/healthz, /metrics)"
    );
    tokio::spawn(serve(listener, app, stop))
}

/// The open connections, oldest first (by id).
#[derive(Default)]
struct Connections {
    next_id: u64,
    open: BTreeMap<u64, Conn>,
}

struct Conn {
    /// A request is being answered (its head was read, its response not
    /// yet written).
    busy: Arc<AtomicBool>,
    /// Closes the connection.
    close: CancellationToken,
}

impl Connections {
    /// Make room for one more: close the oldest connection not answering a
    /// request. False when every open connection is busy.
    fn make_room(&mut self) -> bool {
        if self.open.len() < MAX_CONNECTIONS {
            return true;
        }
        let oldest_idle = self
            .open
            .iter()
            .find(|(_, c)| !c.busy.load(Ordering::Acquire))
            .map(|(id, _)| *id);
        match oldest_idle.and_then(|id| self.open.remove(&id)) {
            Some(c) => {
                c.close.cancel();
                true
            }
            None => false,
        }
    }
}

/// The accept loop: one task per connection, at most [`MAX_CONNECTIONS`].
async fn serve(listener: TcpListener, app: Router, stop: CancellationToken) {
    let conns = Arc::new(Mutex::new(Connections::default()));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    let mut last_error_log: Option<Instant> = None;
    let mut suppressed_errors = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                if last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    warn!(error = %e, suppressed = suppressed_errors,
                        "health and metrics listener cannot accept a connection (out of descriptors?); retrying");
                    last_error_log = Some(Instant::now());
                    suppressed_errors = 0;
                } else {
                    suppressed_errors += 1;
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let busy = Arc::new(AtomicBool::new(false));
        let close = stop.child_token();
        let id = {
            let Ok(mut c) = conns.lock() else { break };
            if !c.make_room() {
                debug!(%peer, "http connection refused: every connection is busy");
                continue;
            }
            let id = c.next_id;
            c.next_id += 1;
            c.open.insert(
                id,
                Conn {
                    busy: Arc::clone(&busy),
                    close: close.clone(),
                },
            );
            id
        };
        let router = app.clone();
        let service = hyper::service::service_fn(move |req| {
            let mut router = router.clone();
            let busy = Arc::clone(&busy);
            busy.store(true, Ordering::Release);
            async move {
                let response = tower_service::Service::call(&mut router, req).await;
                busy.store(false, Ordering::Release);
                response
            }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let conns = Arc::clone(&conns);
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                r = connection.as_mut() => {
                    if let Err(e) = r {
                        debug!(%peer, error = %e, "http connection ended");
                    }
                }
                _ = close.cancelled() => {
                    debug!(%peer, "http connection closed (connection cap or shutdown)");
                }
            }
            if let Ok(mut c) = conns.lock() {
                c.open.remove(&id);
            }
        });
    }
    // Close every open connection.
    let open = match conns.lock() {
        Ok(mut c) => std::mem::take(&mut c.open),
        Err(_) => BTreeMap::new(),
    };
    for conn in open.values() {
        conn.close.cancel();
    }
}

/// Run one API read on a blocking thread with the API's reader (a SQLite
/// read must not hold an async worker), and answer with its JSON or error.
async fn api_read<F>(s: &Shared, f: F) -> Response
where
    F: FnOnce(&Reader, TimeMs) -> Result<serde_json::Value, ApiError> + Send + 'static,
{
    let reader = Arc::clone(&s.api);
    let now = s.clock.now_ms();
    let done = tokio::task::spawn_blocking(move || {
        let guard = reader
            .lock()
            .map_err(|_| ApiError::Internal("the API reader is poisoned".into()))?;
        f(&guard, now)
    })
    .await;
    match done {
        Ok(Ok(v)) => json_response(StatusCode::OK, &v),
        Ok(Err(e)) => e.into_response(),
        Err(e) => ApiError::Internal(e.to_string()).into_response(),
    }
}

/// The query string's pairs.
fn query(raw: Option<String>) -> Result<BTreeMap<String, String>, ApiError> {
    api::query_pairs(raw.as_deref())
}

async fn api_patients(State(s): State<Arc<Shared>>, RawQuery(raw): RawQuery) -> Response {
    let q = match query(raw) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = api::only(&q, &[]) {
        return e.into_response();
    }
    let stale_after = s.state_stale_after_ms;
    api_read(&s, move |r, now| api::patients(r, now, stale_after)).await
}

async fn api_patient(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let stale_after = s.state_stale_after_ms;
    api_read(&s, move |r, now| api::patient(r, &id, now, stale_after)).await
}

async fn api_series(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = match query(raw).map(|q| api::series_query(&q)) {
        Ok(Ok(q)) => q,
        Ok(Err(e)) | Err(e) => return e.into_response(),
    };
    api_read(&s, move |r, _| api::series(r, &id, q)).await
}

async fn api_events(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = match query(raw) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    api_read(&s, move |r, _| api::events(r, &id, &q)).await
}

async fn api_patient_alerts(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    api_read(&s, move |r, _| api::patient_alerts(r, &id)).await
}

async fn api_alerts(State(s): State<Arc<Shared>>, RawQuery(raw): RawQuery) -> Response {
    let q = match query(raw) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    api_read(&s, move |r, now| api::alerts(r, now, &q)).await
}

async fn api_forecast(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = match query(raw).and_then(|q| forecast::forecast_query(&q)) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let models = Arc::clone(&s.models);
    api_read(&s, move |r, now| {
        forecast::forecast(&models, r, &id, q, now)
    })
    .await
}

async fn api_acknowledge(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let now_ms = s.clock.now_ms();
    acknowledge::acknowledge(
        &s.acknowledge,
        Arc::clone(&s.api),
        now_ms,
        &id,
        &headers,
        body,
    )
    .await
}

async fn api_stream(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    match s.live.stream(last) {
        Some(sse) => sse.into_response(),
        None => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"error": {"code": "too_many_streams", "parameter": null,
                "message": format!("at most {} live streams at once", live::MAX_STREAMS)}}),
        ),
    }
}

async fn ward_page(State(s): State<Arc<Shared>>) -> Response {
    pages::page(Page::Ward, &s.time_zone, s.acknowledge.mode())
}

async fn patient_page(State(s): State<Arc<Shared>>, Path(_id): Path<String>) -> Response {
    pages::page(Page::Patient, &s.time_zone, s.acknowledge.mode())
}

async fn asset(Path(name): Path<String>) -> Response {
    pages::asset(&name)
}

async fn not_found() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        &serde_json::json!({"error": {"code": "not_found", "parameter": null,
                                      "message": "no such endpoint (see docs/http-api.md)"}}),
    )
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let (outbox_pending, outbox_dead_letter_rows) = match s.reader.lock() {
        Ok(reader) => (
            match reader.outbox_pending() {
                Ok(n) => Some(n),
                Err(e) => {
                    warn!(error = %e, "outbox not readable for /metrics");
                    None
                }
            },
            match reader.outbox_dead_letters() {
                Ok(n) => Some(n),
                Err(e) => {
                    warn!(error = %e, "outbox dead letters not readable for /metrics");
                    None
                }
            },
        ),
        Err(_) => (None, None),
    };
    let scraped = Scraped {
        ingest: s.ingest.stats(),
        publisher: s.publisher.stats(),
        outbox_pending,
        outbox_dead_letter_rows,
        memory: crate::service::memstats::read(),
        now_ms: s.clock.now_ms(),
    };
    match s.metrics.encode(&scraped) {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "metrics not encoded\n").into_response(),
    }
}

async fn healthz(State(s): State<Arc<Shared>>) -> Response {
    let mut commits = s.writer.stats().commits;
    let writer_alive = writer_alive(&s.writer, WRITER_PROBE, &mut commits).await;
    let now = s.clock.now_ms();
    let health = judge(
        Observed {
            broker_ingest_connected: s.ingest.stats().connected,
            broker_publisher_connected: s.publisher.is_connected(),
            writer_alive,
            lag: s.metrics.lag(now),
            last_commit_ms: s.metrics.commit().last_commit_ms(),
            now_ms: now,
        },
        s.health.problems(),
        s.max_unacked_age_s,
    );
    let code = if health.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    match serde_json::to_string(&health) {
        Ok(body) => (code, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "health not encoded\n").into_response(),
    }
}

/// What `/healthz` looked at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Observed {
    pub broker_ingest_connected: bool,
    pub broker_publisher_connected: bool,
    pub writer_alive: bool,
    pub lag: LagSnapshot,
    pub last_commit_ms: Option<TimeMs>,
    pub now_ms: TimeMs,
}

/// `/healthz`'s body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Health {
    /// `ok` or `unhealthy`.
    pub status: &'static str,
    #[serde(skip)]
    pub healthy: bool,
    /// Why it is unhealthy (empty when healthy).
    pub reasons: Vec<String>,
    pub broker_ingest_connected: bool,
    pub broker_publisher_connected: bool,
    pub writer_alive: bool,
    pub unacked_inputs: u64,
    pub oldest_unacked_age_s: f64,
    /// Seconds since the last committed transaction; `null` before the
    /// first (an idle daemon commits nothing: informative, not judged).
    pub last_commit_age_s: Option<f64>,
    /// The technical problems now, as in the retained status (empty when
    /// all is well); each makes the daemon unhealthy.
    pub problems: Vec<Problem>,
    pub version: &'static str,
}

/// Healthy when both broker connections are up, the writer makes progress,
/// no technical problem is raised and no input has waited longer than
/// `max_unacked_age_s`.
pub(super) fn judge(o: Observed, problems: Vec<Problem>, max_unacked_age_s: u64) -> Health {
    let mut reasons = Vec::new();
    if !o.broker_ingest_connected {
        reasons.push("broker: the ingest connection is down (reconnecting)".to_owned());
    }
    if !o.broker_publisher_connected {
        reasons.push("broker: the publisher connection is down (reconnecting)".to_owned());
    }
    if !o.writer_alive {
        reasons.push("store: the writer thread has not answered".to_owned());
    }
    if o.lag.oldest_unacked_age_s > max_unacked_age_s as f64 {
        reasons.push(format!(
            "lag: {} input(s) not acknowledged, the oldest for {:.0} s (limit {max_unacked_age_s} s)",
            o.lag.unacked_inputs, o.lag.oldest_unacked_age_s
        ));
    }
    for p in &problems {
        reasons.push(format!(
            "{}: since {}: {}",
            p.code.as_str(),
            p.since,
            p.message
        ));
    }
    Health {
        status: if reasons.is_empty() {
            "ok"
        } else {
            "unhealthy"
        },
        healthy: reasons.is_empty(),
        reasons,
        broker_ingest_connected: o.broker_ingest_connected,
        broker_publisher_connected: o.broker_publisher_connected,
        writer_alive: o.writer_alive,
        unacked_inputs: o.lag.unacked_inputs,
        oldest_unacked_age_s: o.lag.oldest_unacked_age_s,
        last_commit_age_s: o
            .last_commit_ms
            .map(|t| ((o.now_ms - t).max(0) as f64) / 1000.0),
        problems,
        version: env!("CARGO_PKG_VERSION"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn good() -> Observed {
        Observed {
            broker_ingest_connected: true,
            broker_publisher_connected: true,
            writer_alive: true,
            lag: LagSnapshot {
                unacked_inputs: 2,
                oldest_unacked_age_s: 0.5,
            },
            last_commit_ms: Some(9_000),
            now_ms: 10_000,
        }
    }

    #[test]
    fn healthy_when_everything_is_good() {
        let h = judge(good(), Vec::new(), 60);
        assert!(h.healthy);
        assert_eq!(h.status, "ok");
        assert!(h.reasons.is_empty());
        assert_eq!(h.last_commit_age_s, Some(1.0));
    }

    #[test]
    fn each_fault_is_a_reason() {
        let mut o = good();
        o.broker_publisher_connected = false;
        o.writer_alive = false;
        o.lag.oldest_unacked_age_s = 61.0;
        let h = judge(o, Vec::new(), 60);
        assert!(!h.healthy);
        assert_eq!(h.status, "unhealthy");
        assert_eq!(h.reasons.len(), 3, "{:?}", h.reasons);
        assert!(h.reasons[0].contains("publisher"));
        assert!(h.reasons[1].contains("writer"));
        assert!(h.reasons[2].contains("not acknowledged"));
        let mut o = good();
        o.broker_ingest_connected = false;
        assert!(judge(o, Vec::new(), 60).reasons[0].contains("ingest"));
    }

    /// A technical problem of the retained status (here: the database is
    /// locked by another process) makes /healthz 503 with its code, and is
    /// listed in the body.
    #[test]
    fn a_technical_problem_is_unhealthy() {
        let locked = Problem {
            code: crate::service::health::ProblemCode::DatabaseLocked,
            since: "2026-12-02T06:00:00Z".into(),
            message: "database write failing (locked)".into(),
        };
        let h = judge(good(), vec![locked.clone()], 60);
        assert!(!h.healthy);
        assert_eq!(h.reasons.len(), 1, "{:?}", h.reasons);
        assert!(h.reasons[0].starts_with("database_locked: since 2026-12-02T06:00:00Z"));
        let body: serde_json::Value = serde_json::to_value(&h).unwrap();
        assert_eq!(body["problems"][0]["code"], "database_locked");
        assert_eq!(body["status"], "unhealthy");
    }
}
