//! The async runtime and the signals of the long-running commands (`run`,
//! `demo`, `simulate-devices`): [`block_on`] builds one multi-thread tokio
//! runtime, installs the command's signal handlers in it, runs the
//! command's future with the token the signals cancel, and ends the
//! runtime. The other commands are synchronous and start no runtime.

use super::LOG_TARGET;
use anyhow::Context as _;
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Which signals a command handles.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Signals {
    /// Ctrl-C (SIGINT) or SIGTERM cancels [`Stop::shutdown`] (`demo`,
    /// `simulate-devices`). A task of the runtime waits for them; if the
    /// SIGTERM handler cannot be installed, Ctrl-C alone.
    Interrupt,
    /// The service's ([`service_signals`]): SIGTERM and SIGINT tell systemd
    /// `STOPPING=1` and cancel [`Stop::shutdown`]; SIGHUP sends a reload
    /// request to [`Stop::reloads`]. Installed before the command's future
    /// starts; failing to install them is an error.
    Service,
}

/// How the runtime ends once the command's future is done.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ending {
    /// Dropped: waits for any blocking task still running (`run`,
    /// `simulate-devices`).
    Wait,
    /// `shutdown_timeout`: what is left (the signal task, anything else)
    /// may hold the exit this long at most (`demo`).
    Within(Duration),
}

/// What the command's future is given.
#[derive(Debug)]
pub(crate) struct Stop {
    /// Cancelled by a stop signal.
    pub(crate) shutdown: CancellationToken,
    /// [`Signals::Service`]: one message per reload request (SIGHUP); at
    /// most one pending. `None` for [`Signals::Interrupt`].
    pub(crate) reloads: Option<mpsc::Receiver<()>>,
}

/// Run `body` to completion on a new multi-thread runtime with `signals`
/// handled, then end the runtime as `ending` says. The error is the
/// runtime's or the signal handlers' (exit code 1); the command's own
/// result is the `Ok` value.
pub(crate) fn block_on<F, Fut>(
    signals: Signals,
    ending: Ending,
    body: F,
) -> anyhow::Result<Fut::Output>
where
    F: FnOnce(Stop) -> Fut,
    Fut: Future,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let reloads = match signals {
            Signals::Interrupt => {
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    wait_for_signal().await;
                    stop.cancel();
                });
                None
            }
            Signals::Service => {
                let (reload_tx, reload_rx) = mpsc::channel(1);
                service_signals(shutdown.clone(), reload_tx)
                    .context("installing signal handlers")?;
                Some(reload_rx)
            }
        };
        Ok(body(Stop { shutdown, reloads }).await)
    });
    match ending {
        Ending::Wait => drop(runtime),
        Ending::Within(limit) => runtime.shutdown_timeout(limit),
    }
    result
}

/// Ctrl-C or SIGTERM (Ctrl-C alone where SIGTERM cannot be handled).
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The service's signals, handled from now on: SIGTERM and SIGINT start a
/// clean stop (`STOPPING=1` to systemd first); SIGHUP (`systemctl reload`)
/// asks the daemon to reload its configuration (`reload`; one pending
/// request at most: SIGHUPs during a reload fold into the next one).
fn service_signals(stop: CancellationToken, reload: mpsc::Sender<()>) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            let name = loop {
                tokio::select! {
                    _ = term.recv() => break "SIGTERM",
                    _ = int.recv() => break "SIGINT",
                    _ = hup.recv() => {
                        tracing::info!(target: LOG_TARGET, signal = "SIGHUP", "reload requested");
                        // Full: a reload is already pending and reads the
                        // files as they are then.
                        let _ = reload.try_send(());
                    }
                }
            };
            dosetrack::service::systemd::stopping();
            tracing::info!(target: LOG_TARGET, signal = name, "stop signal received");
            stop.cancel();
        });
    }
    #[cfg(not(unix))]
    {
        drop(reload);
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            dosetrack::service::systemd::stopping();
            tracing::info!(target: LOG_TARGET, "stop signal received");
            stop.cancel();
        });
    }
    Ok(())
}
