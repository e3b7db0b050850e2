//! What the demo sets up on the broker before the run and tidies after it,
//! through [`crate::mqtt`]: the daemon's persistent ingest session (created
//! before the daemon starts, so nothing the ward publishes meanwhile is
//! lost), and on an external broker the retained messages and that session
//! at the end.

use super::topics::DemoTopics;
use super::{ClientIds, DemoError};
use crate::mqtt::{self, BrokerConfig, MqttError};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How long the first connection to the broker may take (the embedded
/// broker may still be starting).
pub(super) const CONNECT_WAIT: Duration = Duration::from_secs(10);
/// How long a SUBACK or the PUBACKs of the tidying may take.
const REPLY_WAIT: Duration = Duration::from_secs(5);
/// How often to look whether a connection is up.
const POLL: Duration = Duration::from_millis(20);
/// How long a connection may take to close.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

pub(super) fn broker_error(host: &str, port: u16, message: impl Into<String>) -> DemoError {
    DemoError::Broker {
        host: host.to_owned(),
        port,
        message: message.into(),
    }
}

/// Wait until `ready()` (true) or `within` has passed (false).
pub(super) async fn wait_for(mut ready: impl FnMut() -> bool, within: Duration) -> bool {
    let until = tokio::time::Instant::now() + within;
    loop {
        if ready() {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// "cannot connect: \<why the last attempt failed\>".
pub(super) fn cannot_connect(last_error: Option<String>) -> String {
    let why = last_error.unwrap_or_else(|| format!("no CONNACK within {CONNECT_WAIT:?}"));
    format!("cannot connect: {why}")
}

/// Stop a connection of the MQTT layer and wait (bounded) for its task.
pub(super) async fn close(
    stop: &CancellationToken,
    task: JoinHandle<Result<(), MqttError>>,
    what: &str,
) {
    stop.cancel();
    match tokio::time::timeout(CLOSE_WAIT, task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => debug!(error = %e, "demo: {what} ended"),
        Ok(Err(e)) => debug!(error = %e, "demo: {what} task failed"),
        Err(_) => debug!("demo: {what} did not stop in time"),
    }
}

/// Create the daemon's persistent session with its input subscriptions, so
/// the broker queues every input from now on, also while the daemon
/// connects: the daemon's own ingest connection ([`mqtt::spawn_ingest`]),
/// run until the broker has granted the subscriptions.
pub(super) async fn prepare_ingest_session(
    host: &str,
    port: u16,
    client_id: &str,
    prefix: &str,
) -> Result<(), DemoError> {
    let stop = CancellationToken::new();
    // Nothing is published under the run's new prefix yet: nothing arrives.
    let (deliver, _incoming) = mpsc::channel(16);
    let (ingest, task) = mqtt::spawn_ingest(
        BrokerConfig::new(host, port, client_id),
        prefix.to_owned(),
        deliver,
        stop.clone(),
    );
    let result = if !wait_for(|| ingest.stats().connections > 0, CONNECT_WAIT).await {
        Err(broker_error(
            host,
            port,
            cannot_connect(ingest.connect_error()),
        ))
    } else if !wait_for(|| ingest.stats().subscriptions > 0, REPLY_WAIT).await {
        Err(broker_error(
            host,
            port,
            "no SUBACK for the inputs: timed out",
        ))
    } else {
        Ok(())
    };
    // DISCONNECT; the broker keeps the session.
    close(&stop, task, "ingest session").await;
    result
}

/// On an external broker: clear the demo's retained messages (`retained`
/// and the daemon's status) and discard the daemon's session (a clean
/// session under its client id).
pub(super) async fn tidy_external(
    host: &str,
    port: u16,
    topics: &DemoTopics,
    ids: &ClientIds,
    retained: &[String],
) {
    let stop = CancellationToken::new();
    let (publisher, task) = mqtt::spawn_plain_publisher(
        BrokerConfig::new(host, port, ids.ingest.clone()),
        stop.clone(),
    );
    if !wait_for(|| publisher.is_connected(), CONNECT_WAIT).await {
        warn!("demo: could not tidy up the external broker");
        close(&stop, task, "tidying connection").await;
        return;
    }
    let status = topics.status();
    let mut confirmations = Vec::new();
    for t in retained.iter().chain(std::iter::once(&status)) {
        // An empty retained message clears the topic.
        if let Ok(c) = publisher
            .publish_then_confirm(t.clone(), Vec::new(), true)
            .await
        {
            confirmations.push(c);
        }
    }
    let _ = tokio::time::timeout(REPLY_WAIT, async {
        for c in confirmations {
            let _ = c.await;
        }
    })
    .await;
    close(&stop, task, "tidying connection").await;
}
