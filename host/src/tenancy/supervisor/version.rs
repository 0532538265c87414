//! A guest version: its instances (one per slot), each started on a
//! guest thread, restarted on its own as the restart policy says, with
//! back-off and a crash-loop limit.

use super::outcome::{GuestError, run_once};
use crate::account::{Counters, InstanceAccount};
use crate::config::model::TenantConfig;
use crate::runtime::engine::Prepared;
use crate::runtime::workers::GuestThreads;
use crate::tenancy::tenant::Tenant;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use wasmtime::Engine;

/// A running guest instance; dropping it stops the guest.
pub(super) struct Instance {
    pub(super) tenant: String,
    pub(super) account: Arc<InstanceAccount>,
    pub(super) task: JoinHandle<Result<(), GuestError>>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a tenant's supervisor runs its guests with (one host's): the
/// engine, the guest threads, and how many replaced versions may drain at
/// once.
#[derive(Clone)]
pub struct Supervision {
    /// The engine every component is compiled for.
    pub engine: Engine,
    /// Where instances run.
    pub threads: Arc<GuestThreads>,
    /// Replaced versions of one tenant that may drain at once (see
    /// super::MAX_DRAINING).
    pub draining_limit: usize,
}

impl Instance {
    /// Starts `account`'s instance of `pre` on a guest thread.
    pub(super) fn start(
        with: &Supervision,
        pre: &Arc<Prepared>,
        tenant: &Arc<Tenant>,
        config: Arc<TenantConfig>,
        account: Arc<InstanceAccount>,
    ) -> Self {
        let task = with.threads.spawn(run_once(
            with.engine.clone(),
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
    pub(super) fn outcome(
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
    pub(super) fn open(&self) -> u64 {
        self.account.open.load(Ordering::Relaxed)
    }
}

/// One place among a version's instances: the instance in it, if it runs,
/// and where its restart policy stands. Each place restarts on its own, so
/// one instance trapping does not take its siblings down.
pub(super) struct Slot {
    pub(super) account: Arc<InstanceAccount>,
    pub(super) running: Option<Instance>,
    /// When it starts again, after its backoff.
    pub(super) restart_at: Option<tokio::time::Instant>,
    /// The next backoff.
    pub(super) backoff: Duration,
    /// Its restarts within the crash-loop window.
    pub(super) recent_restarts: VecDeque<Instant>,
    /// When it last started.
    pub(super) started: Instant,
    /// How its last run failed, once its policy leaves it stopped.
    pub(super) last_error: Option<GuestError>,
}

/// One guest version: a component and configuration, run as
/// `config.limits.instances` instances behind the tenant's listeners.
pub(super) struct Version {
    pub(super) generation: u64,
    pub(super) pre: Arc<Prepared>,
    pub(super) config: Arc<TenantConfig>,
    pub(super) slots: Vec<Slot>,
}

impl Version {
    /// Starts every instance of `pre` configured by `config` as a new
    /// version of `tenant`. It takes over new connections once one of its
    /// instances listens, or, for a `swap`, once all of them do (the old
    /// version serves meanwhile).
    pub(super) fn start(
        with: &Supervision,
        tenant: &Arc<Tenant>,
        pre: Arc<Prepared>,
        config: Arc<TenantConfig>,
        swap: bool,
    ) -> Self {
        let generation = tenant.next_generation();
        let count = config.limits.instances.resolve(with.threads.count());
        let accounts: Vec<Arc<InstanceAccount>> = (0..count)
            .map(|index| Arc::new(InstanceAccount::new(generation, index)))
            .collect();
        let needed = if swap { accounts.len() } else { 1 };
        tenant.begin_version(generation, accounts.clone(), needed);
        let slots = accounts
            .into_iter()
            .map(|account| Slot {
                running: Some(Instance::start(
                    with,
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
    pub(super) fn accounts(&self) -> Vec<Arc<InstanceAccount>> {
        self.slots.iter().map(|s| s.account.clone()).collect()
    }

    /// Resolves when one of its running instances ends, with its place and
    /// outcome (the place is then empty). Pending while none runs.
    pub(super) async fn next_ended(&mut self) -> (usize, Result<(), GuestError>) {
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
    pub(super) fn any_listening(&self) -> bool {
        self.slots
            .iter()
            .any(|s| s.running.is_some() && s.account.is_listening())
    }

    /// The earliest restart due, if any.
    pub(super) fn next_restart(&self) -> Option<tokio::time::Instant> {
        self.slots.iter().filter_map(|s| s.restart_at).min()
    }

    /// Starts again the instances whose backoff is over.
    pub(super) fn restart_due(&mut self, with: &Supervision, tenant: &Arc<Tenant>) {
        let now = tokio::time::Instant::now();
        for slot in &mut self.slots {
            if slot.restart_at.is_some_and(|at| at <= now) {
                slot.restart_at = None;
                slot.started = Instant::now();
                Counters::bump(&tenant.counters().restarts);
                Counters::bump(&slot.account.restarts);
                slot.running = Some(Instance::start(
                    with,
                    &self.pre,
                    tenant,
                    self.config.clone(),
                    slot.account.clone(),
                ));
            }
        }
    }

    /// Stops every instance and waits until they are gone.
    pub(super) async fn stop(&mut self) {
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
