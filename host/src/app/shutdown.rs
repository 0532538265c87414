//! How the host stops: its signal handlers, serving until a signal (or
//! the one tenant's guest) ends it, and the graceful stop (drain, then a
//! second signal cuts it short).

use crate::tenancy::control::Control;
use crate::tenancy::supervisor::GuestError;
use anyhow::Context;
use std::sync::Arc;
use tracing::{error, info, warn};

/// How the host stopped, when it was stopped (not failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Drained (or the one tenant's guest ended), or stopped before serving.
    Gracefully,
    /// Cut short by a second signal.
    Forced,
}

/// Serves until a signal stops the host (SIGHUP reloads the manifest), or
/// until `guest` (the one-tenant shorthand's) ends.
pub(super) async fn serve_until_stopped(
    control: &Arc<Control>,
    guest: Option<tokio::task::JoinHandle<Result<(), GuestError>>>,
    signals: &mut Signals,
) -> anyhow::Result<Stopped> {
    let guest_done = async move {
        match guest {
            Some(task) => task.await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(guest_done);
    loop {
        tokio::select! {
            joined = &mut guest_done => {
                return match joined {
                    Ok(outcome) => outcome.map(|()| Stopped::Gracefully).map_err(Into::into),
                    Err(e) => Err(anyhow::anyhow!("guest task failed: {e}")),
                };
            }
            signal = signals.next() => match signal {
                Signal::Stop(name) => return Ok(stop(control, signals, name).await),
                Signal::Reload => match control.reload().await {
                    Ok(report) => info!(?report, "SIGHUP: manifest reloaded"),
                    Err(e) => error!("SIGHUP: manifest not reloaded, nothing changed: {e}"),
                },
            },
        }
    }
}

/// Graceful stop: no new connections; open ones may finish, each tenant's
/// for up to its drain timeout; a second SIGINT or SIGTERM cuts it short.
pub(super) async fn stop(control: &Control, signals: &mut Signals, name: &str) -> Stopped {
    control.stop_accepting();
    let open: u64 = control.tenants().iter().map(|t| t.open_connections()).sum();
    info!(
        open,
        "received {name}: accepting no more clients; waiting for {open} open connections (a second signal stops at once)"
    );
    let second = async {
        loop {
            if let Signal::Stop(name) = signals.next().await {
                return name;
            }
        }
    };
    tokio::select! {
        left = control.drained() => {
            if left == 0 {
                info!("every connection closed; stopped");
            } else {
                warn!(left, "drain timeout passed; stopped, closing {left} connections");
            }
            Stopped::Gracefully
        }
        second = second => {
            let left: u64 = control.tenants().iter().map(|t| t.open_connections()).sum();
            warn!(left, "received {second} again: stopped at once, closing {left} connections");
            Stopped::Forced
        }
    }
}

/// A signal the host acts on.
pub(super) enum Signal {
    /// SIGINT or SIGTERM (named): stop.
    Stop(&'static str),
    /// SIGHUP: reload the manifest.
    Reload,
}

/// The host's signal handlers, installed when created.
pub(super) struct Signals {
    pub(super) term: tokio::signal::unix::Signal,
    pub(super) int: tokio::signal::unix::Signal,
    pub(super) hup: tokio::signal::unix::Signal,
}

impl Signals {
    pub(super) fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            hup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
        })
    }

    pub(super) async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop("SIGTERM"),
            _ = self.int.recv() => Signal::Stop("SIGINT"),
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}
