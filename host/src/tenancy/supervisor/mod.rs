//! Runs each tenant's guest as `instances` instances behind its listeners
//! and keeps each running according to the restart policy: exponential
//! backoff between restarts, and a crash-loop limit past which the tenant
//! is marked failed. Swaps a tenant's guest live: the new version's
//! instances start beside the old ones, take over new connections once all
//! of them listen, and the old ones drain, each on its own. Turns how a guest ended into an outcome
//! the operator can act on: a clean exit, an error status, a trap with its
//! wasm backtrace, the CPU limit, the memory limit.
//!
//! Its parts: `outcome` one run of an instance and how it ended,
//! `version` a version's instances and their restarts, `swap` the live
//! swap and the drain of the replaced version.

mod outcome;
mod swap;
mod version;

pub use outcome::GuestError;
use swap::{Draining, PendingSwap};
pub use swap::{MAX_DRAINING, MAX_DRAINING_POOLED, SWAP_SETTLE, SWAP_TIMEOUT};
pub use version::Supervision;
use version::Version;

use crate::config::model::{RestartPolicy, TenantConfig};
use crate::runtime::engine::Prepared;
use crate::tenancy::tenant::{State, Tenant};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

/// What an operator can ask of a running tenant's supervisor.
pub enum Command {
    /// Replace the running guest with `pre`, configured by `config`, without
    /// a gap; the reply says how long the new version took to listen.
    Swap {
        /// The new configuration (component, limits, grants).
        config: Arc<TenantConfig>,
        /// The new component, compiled and linked.
        pre: Arc<Prepared>,
        /// Where the outcome goes.
        reply: oneshot::Sender<Result<Duration, String>>,
    },
}

/// Runs a tenant's guest instances, restarting each as its policy says,
/// and swapping them live on command, until the policy leaves every
/// instance stopped, or one crash-loops (the tenant is then failed).
/// Returns the outcome: the first instance's failure, if any.
pub async fn supervise(
    with: Supervision,
    pre: Arc<Prepared>,
    tenant: Arc<Tenant>,
    mut commands: mpsc::Receiver<Command>,
) -> Result<(), GuestError> {
    let mut current = Version::start(&with, &tenant, pre, tenant.config(), false);
    let mut draining = Draining {
        versions: VecDeque::new(),
        limit: with.draining_limit,
    };
    let mut swapping: Option<PendingSwap> = None;
    // The current version stopped for good while a swap was under way:
    // the tenant ends so unless the swap succeeds.
    let mut ended: Option<(Result<(), GuestError>, State)> = None;
    loop {
        let restart_at = current.next_restart();
        let (awaited, deadline) = match &swapping {
            Some(p) => (
                p.listened.is_none().then_some(p.next.generation),
                Some(p.deadline),
            ),
            None => (None, None),
        };
        tokio::select! {
            // Listening wins a tie with the new version's failure: the
            // failure is then caught while it settles.
            biased;
            () = until_current(&tenant, awaited), if awaited.is_some() => {
                if let Some(p) = &mut swapping {
                    p.listened = Some(p.started.elapsed());
                    p.deadline = tokio::time::Instant::now() + SWAP_SETTLE;
                }
            }
            end = next_of(&mut swapping), if swapping.is_some() => {
                if let Some(p) = swapping.take() {
                    let why = p.ended(end);
                    p.fail(&tenant, &current, why).await;
                }
            }
            () = sleep_until(deadline), if deadline.is_some() => {
                if let Some(p) = swapping.take() {
                    if p.listened.is_some() {
                        p.complete(&tenant, &mut current, &mut draining);
                        // The new version serves: the old one's end is
                        // history.
                        ended = None;
                    } else {
                        let why = p.timed_out();
                        p.fail(&tenant, &current, why).await;
                    }
                }
            }
            (index, outcome) = current.next_ended() => {
                if let Some(end) = instance_ended(&tenant, &mut current, index, outcome) {
                    if swapping.is_none() {
                        return give_up(&tenant, end);
                    }
                    ended = Some(end);
                }
            }
            () = sleep_until(restart_at), if restart_at.is_some() => {
                current.restart_due(&with, &tenant);
            }
            Some(command) = commands.recv(), if swapping.is_none() => match command {
                Command::Swap { config, pre, reply } => {
                    swapping = Some(PendingSwap::start(&with, &tenant, config, pre, reply));
                }
            },
        }
        if swapping.is_none()
            && let Some(end) = ended.take()
        {
            return give_up(&tenant, end);
        }
    }
}

/// Resolves once `generation` takes over (never without one).
async fn until_current(tenant: &Tenant, generation: Option<u64>) {
    match generation {
        Some(generation) => tenant.until_current(generation).await,
        None => std::future::pending().await,
    }
}

/// Resolves when an instance of the swap's new version ends (never
/// without a swap).
async fn next_of(swapping: &mut Option<PendingSwap>) -> (usize, Result<(), GuestError>) {
    match swapping {
        Some(p) => p.next.next_ended().await,
        None => std::future::pending().await,
    }
}

/// Nobody will serve the tenant's addresses: they refuse rather than
/// queue (before the state says so), and the tenant is left `state`.
/// Returns the supervisor's result.
fn give_up(
    tenant: &Tenant,
    (outcome, state): (Result<(), GuestError>, State),
) -> Result<(), GuestError> {
    tenant.close_listeners();
    tenant.set_state(state);
    outcome
}

/// Sleeps until `at` (forever without one).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Applies the restart policy to instance `index` of `version`, which
/// ended with `outcome`: a restart after its backoff, or left stopped; a
/// crash loop gives the whole tenant up. Returns the supervisor's result,
/// and the state to leave the tenant in, once nothing of the version is
/// left to run (see [`give_up`]).
fn instance_ended(
    tenant: &Arc<Tenant>,
    version: &mut Version,
    index: usize,
    outcome: Result<(), GuestError>,
) -> Option<(Result<(), GuestError>, State)> {
    let name = tenant.name().to_owned();
    let limits = version.config.limits.clone();
    if let Err(e) = &outcome {
        error!(tenant = name, instance = index, "{e}");
        tenant.set_error(e.to_string());
    }
    let restart = match limits.restart {
        RestartPolicy::Never => false,
        RestartPolicy::OnFailure => outcome.is_err(),
        RestartPolicy::Always => true,
    };
    let several = version.slots.len() > 1;
    if !restart {
        version.slots[index].last_error = outcome.err();
        if version
            .slots
            .iter()
            .any(|s| s.running.is_some() || s.restart_at.is_some())
        {
            // Its siblings serve on (once they listen).
            if !version.any_listening() {
                tenant.set_state(State::Restarting);
            }
            if several {
                warn!(
                    tenant = name,
                    instance = index,
                    "instance {index} of {name} stopped for good; the others serve on"
                );
            }
            return None;
        }
        let failed = version.slots.iter_mut().find_map(|s| s.last_error.take());
        let state = if failed.is_some() {
            State::Failed
        } else {
            State::Stopped
        };
        return Some((failed.map_or(Ok(()), Err), state));
    }

    let slot = &mut version.slots[index];
    let now = Instant::now();
    slot.recent_restarts
        .retain(|t| now.duration_since(*t) < limits.crash_loop_window);
    if slot.recent_restarts.len() >= limits.crash_loop_limit as usize {
        let restarts = slot.recent_restarts.len();
        let whose = if several {
            format!("{name} (instance {index})")
        } else {
            name.clone()
        };
        error!(
            tenant = name,
            instance = index,
            restarts,
            "{whose} restarted {restarts} times within {:?}: marked failed, its addresses now refuse connections",
            limits.crash_loop_window
        );
        tenant.set_error(format!(
            "crash loop: restarted {restarts} times within {:?}; last: {}",
            limits.crash_loop_window,
            outcome
                .as_ref()
                .err()
                .map_or("clean exit".to_owned(), ToString::to_string)
        ));
        // Its siblings run the same broken version: stopped with it
        // (dropping an instance stops it).
        for slot in &mut version.slots {
            slot.running = None;
            slot.restart_at = None;
        }
        return Some((outcome, State::Failed));
    }
    slot.recent_restarts.push_back(now);

    // A run that lasted a while was healthy: start backing off afresh.
    if slot.started.elapsed() >= limits.restart_backoff_max {
        slot.backoff = limits.restart_backoff;
    }
    let backoff = slot.backoff;
    slot.restart_at = Some(tokio::time::Instant::now() + backoff);
    slot.backoff = (backoff * 2).min(limits.restart_backoff_max);
    if !version.any_listening() {
        tenant.set_state(State::Restarting);
    }
    if several {
        warn!(
            tenant = name,
            instance = index,
            delay_ms = backoff.as_millis(),
            "restarting {name} (instance {index}) in {backoff:?}"
        );
    } else {
        warn!(
            tenant = name,
            delay_ms = backoff.as_millis(),
            "restarting {name} in {backoff:?}"
        );
    }
    None
}
