//! Runs each tenant's guest and keeps it running according to its restart
//! policy: exponential backoff between restarts, and a crash-loop limit past
//! which the tenant is marked failed. Swaps a tenant's guest live: the new
//! version starts beside the old, takes over new connections once it
//! listens, and the old one drains. Turns how a guest ended into an outcome
//! the operator can act on: a clean exit, an error status, a trap with its
//! wasm backtrace, the CPU limit, the memory limit.

use crate::account::Counters;
use crate::config::manifest::{RestartPolicy, TenantConfig};
use crate::limits::cpu::CpuLimitExceeded;
use crate::runtime::engine::Prepared;
use crate::runtime::instance;
use crate::tenancy::tenant::{State, Tenant};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};
use wasmtime::{Engine, Trap, WasmBacktrace};
use wasmtime_wasi::I32Exit;

/// How a guest instance failed.
#[derive(Debug, Error)]
pub enum GuestError {
    /// Instantiation failed (a trap or error in the component's start-up).
    #[error("guest '{tenant}' failed to start: {reason}")]
    Start {
        /// The tenant.
        tenant: String,
        /// wasmtime's message.
        reason: String,
    },
    /// The guest trapped: a panic, an out-of-bounds access, `unreachable`.
    #[error(
        "guest '{tenant}' trapped: {trap}{cause}{}",
        backtrace.as_deref().map(|b| format!("\nwasm backtrace:\n{b}")).unwrap_or_default()
    )]
    Trapped {
        /// The tenant.
        tenant: String,
        /// The trap.
        trap: Trap,
        /// What probably led to it, with a leading separator.
        cause: String,
        /// Where, as far as the guest's symbols tell.
        backtrace: Option<String>,
    },
    /// The guest computed past its CPU limit without yielding.
    #[error("guest '{tenant}' was stopped: it {cpu}")]
    CpuLimit {
        /// The tenant.
        tenant: String,
        /// How long it ran.
        cpu: CpuLimitExceeded,
    },
    /// The guest called `wasi:cli/exit` with a non-zero status.
    #[error("guest '{tenant}' exited with status {code}")]
    ExitStatus {
        /// The tenant.
        tenant: String,
        /// The status.
        code: i32,
    },
    /// `wasi:cli/run` returned its error result.
    #[error("guest '{tenant}' stopped with an error (its log above says why)")]
    RunFailed {
        /// The tenant.
        tenant: String,
    },
    /// The host could not carry on running the guest (e.g. a resource limit).
    #[error("guest '{tenant}' failed: {reason}")]
    Host {
        /// The tenant.
        tenant: String,
        /// wasmtime's or wasmtime-wasi's message.
        reason: String,
    },
}

/// Instantiates the guest (version `generation`, configured by `config`) in
/// a fresh sandbox and runs its `wasi:cli/run` to completion.
async fn run_once(
    engine: Engine,
    pre: Arc<Prepared>,
    tenant: Arc<Tenant>,
    config: Arc<TenantConfig>,
    generation: u64,
    open: Arc<AtomicU64>,
) -> Result<(), GuestError> {
    let tenant = &tenant;
    let name = tenant.name().to_owned();
    let mut store = instance::store(&engine, tenant.clone(), &config, generation, open);
    let command = pre.instantiate(&mut store).await.map_err(|e| {
        // A trap in the component's start-up counts as one.
        if e.downcast_ref::<Trap>().is_some() {
            Counters::bump(&tenant.counters().traps);
        }
        GuestError::Start {
            tenant: name.clone(),
            reason: crate::runtime::engine::one_line(&e),
        }
    })?;
    // Running once it listens (the Tenancy seam, crate::tenancy::tenant).
    info!(tenant = name, "guest started");
    let outcome = command.run(&mut store).await;
    let out_of_memory = store.data().hit_memory_limit();
    let max_memory = config.limits.max_memory;
    match outcome {
        Ok(Ok(())) => {
            info!(tenant = name, "guest finished");
            Ok(())
        }
        Ok(Err(())) => Err(GuestError::RunFailed { tenant: name }),
        // `exit(0)` is a clean finish, reported through the error path.
        Err(e) if e.downcast_ref::<I32Exit>().is_some_and(|exit| exit.0 == 0) => {
            info!(tenant = name, "guest finished");
            Ok(())
        }
        Err(e) => Err(classify(
            name,
            e,
            out_of_memory.then_some(max_memory),
            tenant,
        )),
    }
}

/// Sorts a failed call into exit status, CPU limit, trap or host error.
/// `out_of_memory` is the memory limit, if the guest was refused growth.
fn classify(
    tenant: String,
    e: wasmtime::Error,
    out_of_memory: Option<u64>,
    record: &Tenant,
) -> GuestError {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        return GuestError::ExitStatus {
            tenant,
            code: exit.0,
        };
    }
    if e.downcast_ref::<CpuLimitExceeded>().is_some() {
        Counters::bump(&record.counters().traps);
        let cpu = e
            .downcast::<CpuLimitExceeded>()
            .expect("checked just above");
        return GuestError::CpuLimit { tenant, cpu };
    }
    if let Some(&trap) = e.downcast_ref::<Trap>() {
        Counters::bump(&record.counters().traps);
        let backtrace = e.downcast_ref::<WasmBacktrace>().map(|bt| {
            let text = bt.to_string();
            // Drop wasmtime's own heading; ours precedes the frames.
            let frames = text
                .split_once('\n')
                .map_or(text.as_str(), |(_, rest)| rest);
            frames.trim_end().to_owned()
        });
        let cause = match out_of_memory {
            Some(limit) => {
                format!(" (out of memory: growth past its limit of {limit} bytes was refused)")
            }
            None => " (a guest's panic message, if any, is in its log above)".to_owned(),
        };
        return GuestError::Trapped {
            tenant,
            trap,
            cause,
            backtrace,
        };
    }
    GuestError::Host {
        tenant,
        reason: crate::runtime::engine::one_line(&e),
    }
}

/// How long a new guest version may take to start listening during a live
/// swap before the swap is abandoned.
pub const SWAP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a new guest version must keep running after it listens before
/// a live swap is done: until then the old version stands by, and takes
/// new connections back at once if the new one exits or traps.
pub const SWAP_SETTLE: Duration = Duration::from_secs(1);

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

/// A running guest instance; dropping it stops the guest.
struct Instance {
    tenant: String,
    generation: u64,
    task: JoinHandle<Result<(), GuestError>>,
    /// Client connections it holds.
    open: Arc<AtomicU64>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Instance {
    fn start(
        engine: &Engine,
        pre: &Arc<Prepared>,
        tenant: &Arc<Tenant>,
        config: Arc<TenantConfig>,
    ) -> Self {
        let generation = tenant.next_generation();
        let open = Arc::new(AtomicU64::new(0));
        let task = crate::runtime::workers::spawn(run_once(
            engine.clone(),
            pre.clone(),
            tenant.clone(),
            config,
            generation,
            open.clone(),
        ));
        Instance {
            tenant: tenant.name().to_owned(),
            generation,
            task,
            open,
        }
    }

    /// Waits for the guest to end.
    async fn finished(&mut self) -> Result<(), GuestError> {
        match (&mut self.task).await {
            Ok(outcome) => outcome,
            Err(e) => Err(GuestError::Host {
                tenant: self.tenant.clone(),
                reason: format!("the guest task ended abnormally: {e}"),
            }),
        }
    }
}

/// Replaced versions of one tenant that may drain at once; a swap past this
/// drops the oldest at once, so swaps in quick succession (a component file
/// rewritten over and over, say) cannot keep unbounded instances (each up
/// to the memory limit) alive. Well above what deployments do.
pub const MAX_DRAINING: usize = 16;

/// The same with the pooling allocator, whose slots are shared by every
/// tenant: each tenant's share of the pool is two instances, the current
/// version and one draining.
pub const MAX_DRAINING_POOLED: usize = 1;

/// The replaced versions a tenant may keep draining now: [`MAX_DRAINING`],
/// or [`MAX_DRAINING_POOLED`] once [`pooled`] was called.
static DRAINING_LIMIT: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(MAX_DRAINING);

/// Records that instances come from the pooling allocator.
pub fn pooled() {
    DRAINING_LIMIT.store(MAX_DRAINING_POOLED, Ordering::Relaxed);
}

/// Starts `pre` beside `current` and, once it listens, makes it current; the
/// old instance drains in the background (in `draining`). On failure
/// `current` is untouched.
async fn swap(
    engine: &Engine,
    tenant: &Arc<Tenant>,
    current: &mut Instance,
    config: Arc<TenantConfig>,
    pre: &Arc<Prepared>,
    draining: &mut VecDeque<(u64, JoinHandle<()>)>,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut next = Instance::start(engine, pre, tenant, config.clone());
    let generation = next.generation;
    let ended = |outcome: Result<(), GuestError>, when: &str| match outcome {
        Ok(()) => format!("the new version exited {when}"),
        Err(e) => format!("the new version failed {when}: {e}"),
    };
    let listened = tokio::select! {
        // Listening wins a tie: the failure is then caught while settling.
        biased;
        () = tenant.until_current(generation) => Ok(()),
        outcome = next.finished() => Err(ended(outcome, "before it listened")),
        () = tokio::time::sleep(SWAP_TIMEOUT) => {
            Err(format!("the new version did not listen within {SWAP_TIMEOUT:?}"))
        }
    };
    let took = started.elapsed();
    let settled = match listened {
        Ok(()) => tokio::select! {
            outcome = next.finished() => Err(ended(outcome, "just after it listened")),
            () = tokio::time::sleep(SWAP_SETTLE) => Ok(()),
        },
        Err(why) => Err(why),
    };
    if let Err(why) = settled {
        // Gone for good before the old version takes over again, so it
        // cannot listen (and take over) after that.
        // (A task already finished has given its outcome: awaiting it
        // again would panic.)
        if !next.task.is_finished() {
            next.task.abort();
            let _ = (&mut next.task).await;
        }
        // The old version takes new connections again, whatever the new
        // one did before it failed (it may have listened on some address);
        // running if it still runs (the supervisor sees to it otherwise).
        if tenant.restore_current(generation, current.generation) && !current.task.is_finished() {
            tenant.set_state(State::Running);
        }
        return Err(why);
    }
    let drain = config.limits.drain_timeout;
    tenant.set_config(config);
    let old = std::mem::replace(current, next);
    let name = tenant.name().to_owned();
    info!(
        tenant = name,
        generation,
        ms = took.as_millis(),
        "swapped to a new version"
    );
    draining.retain(|(_, task)| !task.is_finished());
    let limit = DRAINING_LIMIT.load(Ordering::Relaxed);
    if draining.len() >= limit
        && let Some((generation, oldest)) = draining.pop_front()
    {
        oldest.abort();
        warn!(
            tenant = name,
            generation,
            "{limit} replaced versions were draining: dropped the oldest, closing its connections"
        );
    }
    let replaced = old.generation;
    draining.push_back((replaced, tokio::spawn(drain_then_drop(name, old, drain))));
    Ok(took)
}

/// Lets a replaced instance finish its connections, up to `deadline`, then
/// drops it (closing whatever is still open).
async fn drain_then_drop(tenant: String, mut old: Instance, deadline: Duration) {
    let until = Instant::now() + deadline;
    loop {
        let open = old.open.load(Ordering::Relaxed);
        if open == 0 {
            info!(
                tenant,
                generation = old.generation,
                "old version drained and dropped"
            );
            return;
        }
        if Instant::now() >= until {
            warn!(
                tenant,
                generation = old.generation,
                open,
                "drain deadline of {deadline:?} passed: closing {open} connections of the old version"
            );
            return;
        }
        tokio::select! {
            _ = old.finished() => return,
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// Runs a tenant's guest, restarting it as its policy says, and swapping it
/// live on command, until the policy leaves it stopped or failed. Returns
/// the last run's outcome.
pub async fn supervise(
    engine: Engine,
    mut pre: Arc<Prepared>,
    tenant: Arc<Tenant>,
    mut commands: mpsc::Receiver<Command>,
) -> Result<(), GuestError> {
    let name = tenant.name().to_owned();
    let mut backoff = tenant.config().limits.restart_backoff;
    let mut recent_restarts: VecDeque<Instant> = VecDeque::new();
    let mut draining = VecDeque::new();
    loop {
        let started = Instant::now();
        let mut current = Instance::start(&engine, &pre, &tenant, tenant.config());
        let outcome = loop {
            tokio::select! {
                outcome = current.finished() => break outcome,
                Some(command) = commands.recv() => match command {
                    Command::Swap { config, pre: next, reply } => {
                        let result =
                            swap(&engine, &tenant, &mut current, config, &next, &mut draining).await;
                        if result.is_ok() {
                            pre = next;
                        }
                        let _ = reply.send(result);
                    }
                },
            }
        };
        let limits = tenant.config().limits.clone();
        if let Err(e) = &outcome {
            error!(tenant = name, "{e}");
            tenant.set_error(e.to_string());
        }
        let restart = match limits.restart {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => outcome.is_err(),
            RestartPolicy::Always => true,
        };
        if !restart {
            tenant.set_state(if outcome.is_err() {
                State::Failed
            } else {
                State::Stopped
            });
            // Nobody will serve its addresses: refuse rather than queue.
            tenant.close_listeners();
            return outcome;
        }

        let now = Instant::now();
        recent_restarts.retain(|t| now.duration_since(*t) < limits.crash_loop_window);
        if recent_restarts.len() >= limits.crash_loop_limit as usize {
            error!(
                tenant = name,
                restarts = recent_restarts.len(),
                "{name} restarted {} times within {:?}: marked failed, its addresses now refuse connections",
                recent_restarts.len(),
                limits.crash_loop_window
            );
            tenant.set_error(format!(
                "crash loop: restarted {} times within {:?}; last: {}",
                recent_restarts.len(),
                limits.crash_loop_window,
                outcome
                    .as_ref()
                    .err()
                    .map_or("clean exit".to_owned(), ToString::to_string)
            ));
            tenant.set_state(State::Failed);
            tenant.close_listeners();
            return outcome;
        }
        recent_restarts.push_back(now);

        // A run that lasted a while was healthy: start backing off afresh.
        if started.elapsed() >= limits.restart_backoff_max {
            backoff = limits.restart_backoff;
        }
        tenant.set_state(State::Restarting);
        warn!(
            tenant = name,
            delay_ms = backoff.as_millis(),
            "restarting {name} in {backoff:?}"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(limits.restart_backoff_max);
        Counters::bump(&tenant.counters().restarts);
    }
}
