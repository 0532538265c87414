//! A live swap: the new version's instances start beside the current
//! ones, take over new connections once all of them listen and have
//! settled, and the replaced version drains, each instance on its own,
//! woken as its last connection closes.

use super::outcome::GuestError;
use super::version::{Instance, Supervision, Version};
use crate::config::model::TenantConfig;
use crate::runtime::engine::Prepared;
use crate::tenancy::tenant::{State, Tenant};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// How long a new guest version may take to start listening during a live
/// swap before the swap is abandoned.
pub const SWAP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a new guest version must keep running after it listens before
/// a live swap is done: until then the old version stands by, and takes
/// new connections back at once if the new one exits or traps.
pub const SWAP_SETTLE: Duration = Duration::from_secs(1);

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
pub(super) struct Draining {
    pub(super) versions: VecDeque<(u64, JoinHandle<()>)>,
    pub(super) limit: usize,
}

/// A swap under way: the new version's instances starting beside the
/// current ones. The supervisor drives it beside its supervision of the
/// current version (whose instances may end, and be restarted, meanwhile).
pub(super) struct PendingSwap {
    pub(super) next: Version,
    pub(super) started: Instant,
    /// How long the new version took to listen, once it has: it must then
    /// stay up for [`SWAP_SETTLE`].
    pub(super) listened: Option<Duration>,
    /// When it fails for not listening ([`SWAP_TIMEOUT`]), or, once it
    /// listened, when it has settled.
    pub(super) deadline: tokio::time::Instant,
    pub(super) reply: oneshot::Sender<Result<Duration, String>>,
}

impl PendingSwap {
    /// Starts `pre` beside the current version; it takes over new
    /// connections once all its instances listen.
    pub(super) fn start(
        with: &Supervision,
        tenant: &Arc<Tenant>,
        config: Arc<TenantConfig>,
        pre: Arc<Prepared>,
        reply: oneshot::Sender<Result<Duration, String>>,
    ) -> Self {
        PendingSwap {
            next: Version::start(with, tenant, pre, config, true),
            started: Instant::now(),
            listened: None,
            deadline: tokio::time::Instant::now() + SWAP_TIMEOUT,
            reply,
        }
    }

    /// Why the swap fails: instance `index` of the new version ended with
    /// `outcome`.
    pub(super) fn ended(&self, (index, outcome): (usize, Result<(), GuestError>)) -> String {
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
    pub(super) fn timed_out(&self) -> String {
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
    pub(super) async fn fail(mut self, tenant: &Arc<Tenant>, current: &Version, why: String) {
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
    pub(super) fn complete(
        self,
        tenant: &Arc<Tenant>,
        current: &mut Version,
        draining: &mut Draining,
    ) {
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
pub(super) async fn drain_then_drop(tenant: String, old: Version, deadline: Duration) {
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
