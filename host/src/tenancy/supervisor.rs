//! Runs each tenant's guest as `instances` instances behind its listeners
//! and keeps each running according to the restart policy: exponential
//! backoff between restarts, and a crash-loop limit past which the tenant
//! is marked failed. Swaps a tenant's guest live: the new version's
//! instances start beside the old ones, take over new connections once all
//! of them listen, and the old ones drain, each on its own. Turns how a guest ended into an outcome
//! the operator can act on: a clean exit, an error status, a trap with its
//! wasm backtrace, the CPU limit, the memory limit.

use crate::account::{Counters, InstanceAccount};
use crate::config::model::{RestartPolicy, TenantConfig};
use crate::limits::cpu::CpuLimitExceeded;
use crate::runtime::engine::Prepared;
use crate::runtime::instance;
use crate::tenancy::tenant::{State, Tenant};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
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

/// Instantiates the guest (`instance`, configured by `config`) in a fresh
/// sandbox and runs its `wasi:cli/run` to completion.
async fn run_once(
    engine: Engine,
    pre: Arc<Prepared>,
    tenant: Arc<Tenant>,
    config: Arc<TenantConfig>,
    instance: Arc<InstanceAccount>,
) -> Result<(), GuestError> {
    let tenant = &tenant;
    let name = tenant.name().to_owned();
    let index = instance.index;
    let mut store = instance::store(&engine, tenant.clone(), &config, instance);
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
    info!(tenant = name, instance = index, "guest started");
    let outcome = command.run(&mut store).await;
    let out_of_memory = store.data().hit_memory_limit();
    let max_memory = config.limits.max_memory;
    match outcome {
        Ok(Ok(())) => {
            info!(tenant = name, instance = index, "guest finished");
            Ok(())
        }
        Ok(Err(())) => Err(GuestError::RunFailed { tenant: name }),
        // `exit(0)` is a clean finish, reported through the error path.
        Err(e) if e.downcast_ref::<I32Exit>().is_some_and(|exit| exit.0 == 0) => {
            info!(tenant = name, instance = index, "guest finished");
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
    account: Arc<InstanceAccount>,
    task: JoinHandle<Result<(), GuestError>>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Instance {
    /// Starts `account`'s instance of `pre` on a guest thread.
    fn start(
        engine: &Engine,
        pre: &Arc<Prepared>,
        tenant: &Arc<Tenant>,
        config: Arc<TenantConfig>,
        account: Arc<InstanceAccount>,
    ) -> Self {
        let task = crate::runtime::workers::spawn(run_once(
            engine.clone(),
            pre.clone(),
            tenant.clone(),
            config,
            account.clone(),
        ));
        Instance {
            tenant: tenant.name().to_owned(),
            account,
            task,
        }
    }

    /// The outcome of a finished task.
    fn outcome(
        &self,
        joined: Result<Result<(), GuestError>, tokio::task::JoinError>,
    ) -> Result<(), GuestError> {
        joined.unwrap_or_else(|e| {
            Err(GuestError::Host {
                tenant: self.tenant.clone(),
                reason: format!("the guest task ended abnormally: {e}"),
            })
        })
    }

    /// Client connections it holds open.
    fn open(&self) -> u64 {
        self.account.open.load(Ordering::Relaxed)
    }
}

/// One place among a version's instances: the instance in it, if it runs,
/// and where its restart policy stands. Each place restarts on its own, so
/// one instance trapping does not take its siblings down.
struct Slot {
    account: Arc<InstanceAccount>,
    running: Option<Instance>,
    /// When it starts again, after its backoff.
    restart_at: Option<tokio::time::Instant>,
    /// The next backoff.
    backoff: Duration,
    /// Its restarts within the crash-loop window.
    recent_restarts: VecDeque<Instant>,
    /// When it last started.
    started: Instant,
    /// How its last run failed, once its policy leaves it stopped.
    last_error: Option<GuestError>,
}

/// One guest version: a component and configuration, run as
/// `config.limits.instances` instances behind the tenant's listeners.
struct Version {
    generation: u64,
    pre: Arc<Prepared>,
    config: Arc<TenantConfig>,
    slots: Vec<Slot>,
}

impl Version {
    /// Starts every instance of `pre` configured by `config` as a new
    /// version of `tenant`. It takes over new connections once one of its
    /// instances listens, or, for a `swap`, once all of them do (the old
    /// version serves meanwhile).
    fn start(
        engine: &Engine,
        tenant: &Arc<Tenant>,
        pre: Arc<Prepared>,
        config: Arc<TenantConfig>,
        swap: bool,
    ) -> Self {
        let generation = tenant.next_generation();
        let count = config
            .limits
            .instances
            .resolve(crate::runtime::workers::threads());
        let accounts: Vec<Arc<InstanceAccount>> = (0..count)
            .map(|index| Arc::new(InstanceAccount::new(generation, index)))
            .collect();
        let needed = if swap { accounts.len() } else { 1 };
        tenant.begin_version(generation, accounts.clone(), needed);
        let slots = accounts
            .into_iter()
            .map(|account| Slot {
                running: Some(Instance::start(
                    engine,
                    &pre,
                    tenant,
                    config.clone(),
                    account.clone(),
                )),
                account,
                restart_at: None,
                backoff: config.limits.restart_backoff,
                recent_restarts: VecDeque::new(),
                started: Instant::now(),
                last_error: None,
            })
            .collect();
        Version {
            generation,
            pre,
            config,
            slots,
        }
    }

    /// Its instances' accounts.
    fn accounts(&self) -> Vec<Arc<InstanceAccount>> {
        self.slots.iter().map(|s| s.account.clone()).collect()
    }

    /// Resolves when one of its running instances ends, with its place and
    /// outcome (the place is then empty). Pending while none runs.
    async fn next_ended(&mut self) -> (usize, Result<(), GuestError>) {
        std::future::poll_fn(|cx| {
            for (index, slot) in self.slots.iter_mut().enumerate() {
                let Some(instance) = &mut slot.running else {
                    continue;
                };
                if let Poll::Ready(joined) = Pin::new(&mut instance.task).poll(cx) {
                    let outcome = instance.outcome(joined);
                    slot.running = None;
                    slot.account.listening.store(false, Ordering::Relaxed);
                    return Poll::Ready((index, outcome));
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Whether any of its instances listens now.
    fn any_listening(&self) -> bool {
        self.slots
            .iter()
            .any(|s| s.running.is_some() && s.account.is_listening())
    }

    /// The earliest restart due, if any.
    fn next_restart(&self) -> Option<tokio::time::Instant> {
        self.slots.iter().filter_map(|s| s.restart_at).min()
    }

    /// Starts again the instances whose backoff is over.
    fn restart_due(&mut self, engine: &Engine, tenant: &Arc<Tenant>) {
        let now = tokio::time::Instant::now();
        for slot in &mut self.slots {
            if slot.restart_at.is_some_and(|at| at <= now) {
                slot.restart_at = None;
                slot.started = Instant::now();
                Counters::bump(&tenant.counters().restarts);
                Counters::bump(&slot.account.restarts);
                slot.running = Some(Instance::start(
                    engine,
                    &self.pre,
                    tenant,
                    self.config.clone(),
                    slot.account.clone(),
                ));
            }
        }
    }

    /// Stops every instance and waits until they are gone.
    async fn stop(&mut self) {
        for slot in &mut self.slots {
            slot.restart_at = None;
            if let Some(mut instance) = slot.running.take() {
                // (A task already finished has given its outcome: awaiting
                // it again would panic.)
                if !instance.task.is_finished() {
                    instance.task.abort();
                    let _ = (&mut instance.task).await;
                }
            }
        }
    }
}

/// Replaced versions of one tenant that may drain at once; a swap past this
/// drops the oldest at once, so swaps in quick succession (a component file
/// rewritten over and over, say) cannot keep unbounded instances (each up
/// to the memory limit) alive. Well above what deployments do.
pub const MAX_DRAINING: usize = 16;

/// The same with the pooling allocator, whose slots are shared by every
/// tenant: each tenant's share of the pool is two versions' instances, the
/// current version and one draining.
pub const MAX_DRAINING_POOLED: usize = 1;

/// The replaced versions of a tenant draining now, oldest first, and how
/// many may ([`MAX_DRAINING`], or [`MAX_DRAINING_POOLED`] on a host whose
/// instances come from the pooling allocator).
struct Draining {
    versions: VecDeque<(u64, JoinHandle<()>)>,
    limit: usize,
}

/// A swap under way: the new version's instances starting beside the
/// current ones. The supervisor drives it beside its supervision of the
/// current version (whose instances may end, and be restarted, meanwhile).
struct PendingSwap {
    next: Version,
    started: Instant,
    /// How long the new version took to listen, once it has: it must then
    /// stay up for [`SWAP_SETTLE`].
    listened: Option<Duration>,
    /// When it fails for not listening ([`SWAP_TIMEOUT`]), or, once it
    /// listened, when it has settled.
    deadline: tokio::time::Instant,
    reply: oneshot::Sender<Result<Duration, String>>,
}

impl PendingSwap {
    /// Starts `pre` beside the current version; it takes over new
    /// connections once all its instances listen.
    fn start(
        engine: &Engine,
        tenant: &Arc<Tenant>,
        config: Arc<TenantConfig>,
        pre: Arc<Prepared>,
        reply: oneshot::Sender<Result<Duration, String>>,
    ) -> Self {
        PendingSwap {
            next: Version::start(engine, tenant, pre, config, true),
            started: Instant::now(),
            listened: None,
            deadline: tokio::time::Instant::now() + SWAP_TIMEOUT,
            reply,
        }
    }

    /// Why the swap fails: instance `index` of the new version ended with
    /// `outcome`.
    fn ended(&self, (index, outcome): (usize, Result<(), GuestError>)) -> String {
        let count = self.next.slots.len();
        let which = if count > 1 {
            format!("instance {index} of the new version")
        } else {
            "the new version".to_owned()
        };
        let when = match (self.listened, count > 1) {
            (Some(_), _) => "just after it listened",
            (None, true) => "before all its instances listened",
            (None, false) => "before it listened",
        };
        match outcome {
            Ok(()) => format!("{which} exited {when}"),
            Err(e) => format!("{which} failed {when}: {e}"),
        }
    }

    /// Why the swap fails: its deadline passed before it listened.
    fn timed_out(&self) -> String {
        let count = self.next.slots.len();
        if count > 1 {
            let listening = self
                .next
                .slots
                .iter()
                .filter(|s| s.account.is_listening())
                .count();
            format!(
                "{listening} of the new version's {count} instances listened within {SWAP_TIMEOUT:?}"
            )
        } else {
            format!("the new version did not listen within {SWAP_TIMEOUT:?}")
        }
    }

    /// Gives the swap up: the new version is stopped and `current` takes
    /// new connections again, whatever the new one did before it failed.
    async fn fail(mut self, tenant: &Arc<Tenant>, current: &Version, why: String) {
        // Gone for good before the old version takes over again, so none
        // of its instances can listen (and take over) after that.
        self.next.stop().await;
        // Running if any of the old version's instances listens (the
        // supervisor restarts the others).
        if tenant.restore_current(self.next.generation, current.generation, current.accounts()) {
            tenant.set_state(if current.any_listening() {
                State::Running
            } else {
                State::Restarting
            });
        }
        let _ = self.reply.send(Err(why));
    }

    /// Completes the swap: the new version is current, and the old one
    /// drains in the background (in `draining`).
    fn complete(self, tenant: &Arc<Tenant>, current: &mut Version, draining: &mut Draining) {
        let took = self.listened.unwrap_or_default();
        let (generation, count) = (self.next.generation, self.next.slots.len());
        let config = self.next.config.clone();
        let drain = config.limits.drain_timeout;
        tenant.set_config(config);
        let old = std::mem::replace(current, self.next);
        let name = tenant.name().to_owned();
        info!(
            tenant = name,
            generation,
            instances = count,
            ms = took.as_millis(),
            "swapped to a new version"
        );
        draining.versions.retain(|(_, task)| !task.is_finished());
        let limit = draining.limit;
        if draining.versions.len() >= limit
            && let Some((generation, oldest)) = draining.versions.pop_front()
        {
            oldest.abort();
            warn!(
                tenant = name,
                generation,
                "{limit} replaced versions were draining: dropped the oldest, closing its connections"
            );
        }
        let replaced = old.generation;
        draining
            .versions
            .push_back((replaced, tokio::spawn(drain_then_drop(name, old, drain))));
        let _ = self.reply.send(Ok(took));
    }
}

/// Lets each instance of a replaced version finish its connections, up to
/// `deadline`, then drops it (closing whatever is still open): each
/// instance goes as soon as its own connections are done (or its guest
/// ends), woken by its last connection closing, not by polling.
async fn drain_then_drop(tenant: String, old: Version, deadline: Duration) {
    let until = tokio::time::Instant::now() + deadline;
    let generation = old.generation;
    let several = old.slots.len() > 1;
    let instances: Vec<Instance> = old.slots.into_iter().filter_map(|s| s.running).collect();
    let drains = instances.into_iter().map(|mut instance| {
        let tenant = &tenant;
        async move {
            let account = instance.account.clone();
            let done = tokio::select! {
                _ = &mut instance.task => true,
                drained = account.open.until_zero(Some(until)) => drained,
            };
            if done && several {
                info!(
                    tenant,
                    generation,
                    instance = account.index,
                    "instance of the old version drained and dropped"
                );
            }
            // Dropped here: its guest stops, closing what is left.
            if done { 0 } else { instance.open() }
        }
    });
    let open: u64 = futures_util::future::join_all(drains)
        .await
        .into_iter()
        .sum();
    if open == 0 {
        info!(tenant, generation, "old version drained and dropped");
    } else {
        warn!(
            tenant,
            generation,
            open,
            "drain deadline of {deadline:?} passed: closing {open} connections of the old version"
        );
    }
}

/// Runs a tenant's guest instances, restarting each as its policy says,
/// and swapping them live on command, until the policy leaves every
/// instance stopped, or one crash-loops (the tenant is then failed).
/// Returns the outcome: the first instance's failure, if any. At most
/// `draining_limit` replaced versions drain at once (see [`MAX_DRAINING`]).
pub async fn supervise(
    engine: Engine,
    pre: Arc<Prepared>,
    tenant: Arc<Tenant>,
    mut commands: mpsc::Receiver<Command>,
    draining_limit: usize,
) -> Result<(), GuestError> {
    let mut current = Version::start(&engine, &tenant, pre, tenant.config(), false);
    let mut draining = Draining {
        versions: VecDeque::new(),
        limit: draining_limit,
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
                current.restart_due(&engine, &tenant);
            }
            Some(command) = commands.recv(), if swapping.is_none() => match command {
                Command::Swap { config, pre, reply } => {
                    swapping = Some(PendingSwap::start(&engine, &tenant, config, pre, reply));
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
