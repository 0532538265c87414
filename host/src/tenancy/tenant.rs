//! A tenant's shared runtime record: its configuration, its state, the
//! host's listeners for its addresses and which guest version accepts. Its
//! state is written only through its own methods, by the supervisor (start,
//! restart, swap, stop) and control (add, remove), and by the WASI layer
//! only through the [`Tenancy`] seam (a version listens). The admin
//! endpoint and the metrics read it.

use crate::account::{Account, InstanceAccount};
use crate::config::model::TenantConfig;
use crate::limits::admission::{Admission, HostListeners, OpenConnection};
use crate::limits::connection::Policed;
use crate::tenancy::listeners::ListenerSet;
use crate::wasi::seam::Tenancy;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The "current generation" of a tenant that accepts no more clients.
const STOPPED: u64 = u64::MAX;

/// Where a tenant is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Started, not yet listening.
    Starting,
    /// The guest listens on its addresses.
    Running,
    /// Stopped, waiting out a backoff before the next start, or started
    /// again and not yet listening.
    Restarting,
    /// Stopped and left stopped by its restart policy.
    Stopped,
    /// Restarted too often: given up on; its addresses refuse connections.
    Failed,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Restarting => "restarting",
            State::Stopped => "stopped",
            State::Failed => "failed",
        })
    }
}

#[derive(Debug)]
struct Status {
    state: State,
    last_error: Option<String>,
    since: SystemTime,
}

/// One tenant at run time.
#[derive(Debug)]
pub struct Tenant {
    /// Its name, counters and log budgets.
    account: Arc<Account>,
    /// Its admission state (accept gate, back-off, per-peer counts).
    admission: Arc<Admission>,
    /// The host's own endpoints, which no grant of its reaches.
    endpoints: Arc<crate::policy::HostEndpoints>,
    /// Its configuration, replaced by a live swap or a manifest reload.
    config: Mutex<Arc<TenantConfig>>,
    status: Mutex<Status>,
    /// Woken at each change of state, for those waiting on one
    /// ([`Tenant::until_state`]).
    state_changed: tokio::sync::Notify,
    /// The host's listening sockets for the tenant's addresses, handed to
    /// each guest version in turn; closed when the tenant stops for good.
    listeners: Arc<ListenerSet>,
    /// The last guest version (instance) handed out.
    last_generation: AtomicU64,
    /// The guest version that accepts new connections.
    current_generation: tokio::sync::watch::Sender<u64>,
    /// The version being started, and how many of its instances must
    /// listen before it takes over.
    starting: Mutex<IncomingVersion>,
    /// The instances of the version that accepts (for status and metrics).
    instances: Mutex<Vec<Arc<InstanceAccount>>>,
}

/// A guest version on its way to taking over new connections.
#[derive(Debug, Default)]
struct IncomingVersion {
    generation: u64,
    instances: Vec<Arc<InstanceAccount>>,
    /// How many of `instances` must listen first: one when nothing serves
    /// yet (serve as soon as possible), all of them for a live swap (the
    /// old version serves meanwhile, and a version that cannot start whole
    /// never gets a client).
    needed: usize,
}

/// One instance of a tenant, as the admin endpoint reports it.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceSnapshot {
    /// Its place among its version's instances, from 0.
    pub index: u32,
    /// Whether it listens now.
    pub listening: bool,
    /// Client connections it holds open.
    pub connections_open: u64,
    /// Client connections it accepted, ever.
    pub connections_accepted: u64,
    /// Times it was started again after stopping.
    pub restarts: u64,
    /// Times it was interrupted to let others run.
    pub cpu_yields: u64,
}

/// A point-in-time view of a tenant, as the admin endpoint reports it.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Tenant name.
    pub name: String,
    /// The component it runs.
    pub component: String,
    /// The guest version accepting new connections (1 for the first).
    pub generation: u64,
    /// Current state.
    pub state: State,
    /// Seconds since the state last changed.
    pub state_for_secs: f64,
    /// Granted listen addresses.
    pub listen: Vec<String>,
    /// The most recent failure, if any.
    pub last_error: Option<String>,
    /// Restarts so far.
    pub restarts: u64,
    /// Open client connections.
    pub connections_open: u64,
    /// Connections handed to the guest, ever.
    pub connections_accepted: u64,
    /// Connections reset at the cap.
    pub connections_refused: u64,
    /// Outbound connections being made or open.
    pub outbound_connections_open: u64,
    /// Traps so far.
    pub traps: u64,
    /// CPU limit cut-offs so far.
    pub cpu_limit_kills: u64,
    /// Memory growths refused so far.
    pub memory_refusals: u64,
    /// Refused capability attempts so far.
    pub capability_refusals: u64,
    /// The instances of the version that accepts new connections.
    pub instances: Vec<InstanceSnapshot>,
}

impl Tenant {
    /// A tenant that has not started yet, listening (in the host) on
    /// `listeners`, whose addresses are its granted ones, on a host serving
    /// `endpoints`.
    pub fn new(
        config: TenantConfig,
        listeners: Vec<Arc<TcpListener>>,
        endpoints: Arc<crate::policy::HostEndpoints>,
    ) -> Self {
        Tenant {
            account: Arc::new(Account::new(&config.name)),
            admission: Arc::default(),
            endpoints,
            config: Mutex::new(Arc::new(config)),
            status: Mutex::new(Status {
                state: State::Starting,
                last_error: None,
                since: SystemTime::now(),
            }),
            state_changed: tokio::sync::Notify::new(),
            listeners: Arc::new(ListenerSet::new(listeners)),
            last_generation: AtomicU64::new(0),
            current_generation: tokio::sync::watch::Sender::new(0),
            starting: Mutex::default(),
            instances: Mutex::default(),
        }
    }

    /// The configuration new guest versions start with.
    pub fn config(&self) -> Arc<TenantConfig> {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the configuration (after a successful swap).
    pub(in crate::tenancy) fn set_config(&self, config: Arc<TenantConfig>) {
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
    }

    /// Adds host listeners (for addresses a reload grants).
    pub(in crate::tenancy) fn add_listeners(
        &self,
        listeners: impl IntoIterator<Item = (SocketAddr, Arc<TcpListener>)>,
    ) {
        self.listeners.add(listeners);
    }

    /// Closes the listeners of addresses not in `keep`: they refuse new
    /// clients at once.
    pub(in crate::tenancy) fn retain_listeners(&self, keep: &[SocketAddr]) {
        self.listeners.retain(keep);
    }

    /// The host's listener for granted address `addr`, unless closed.
    pub fn listener(&self, addr: SocketAddr) -> Option<Arc<TcpListener>> {
        self.listeners.get(addr)
    }

    /// The host's listeners for all the tenant's addresses.
    pub fn listeners(&self) -> Vec<Arc<TcpListener>> {
        self.listeners.listeners()
    }

    /// Client connections open now, over all guest versions.
    pub fn open_connections(&self) -> u64 {
        self.account
            .counters
            .connections_open
            .load(Ordering::Relaxed)
    }

    /// The tenant's counters.
    pub fn counters(&self) -> &crate::account::Counters {
        &self.account.counters
    }

    /// Stops accepting for good, as the host stops: no guest version is
    /// current any more, and the listening sockets (shared with every
    /// version) are shut down, so the addresses refuse new clients at once.
    pub(in crate::tenancy) fn stop_accepting(&self) {
        self.current_generation.send_replace(STOPPED);
        self.admission.gate.open();
        self.listeners.refuse_all();
    }

    /// Closes the tenant's listeners: its addresses refuse connections.
    pub(in crate::tenancy) fn close_listeners(&self) {
        self.listeners.close_all();
    }

    /// A number for a new guest version (instance).
    pub(in crate::tenancy) fn next_generation(&self) -> u64 {
        self.last_generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Starts guest version `generation`, of `instances`: it takes over new
    /// connections once `needed` of them listen.
    pub(in crate::tenancy) fn begin_version(
        &self,
        generation: u64,
        instances: Vec<Arc<InstanceAccount>>,
        needed: usize,
    ) {
        *self.starting.lock().unwrap_or_else(|p| p.into_inner()) = IncomingVersion {
            generation,
            instances,
            needed,
        };
    }

    /// The instances of the version that accepts new connections.
    pub fn instances(&self) -> Vec<Arc<InstanceAccount>> {
        self.instances
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes `generation` the version that accepts new connections, if it
    /// is newer than the current one (an old version listening again, or
    /// any version once the host is stopping, does not take over). Returns
    /// whether it did.
    fn make_current(&self, generation: u64) -> bool {
        let newer = self.current_generation.send_if_modified(|current| {
            let newer = generation > *current;
            if newer {
                *current = generation;
            }
            newer
        });
        if newer {
            self.admission.gate.open();
        }
        newer
    }

    /// Hands new connections back to `previous` (of `instances`) after
    /// `failed` (the version that had taken over from it, or was about to)
    /// ended, unless a later version or the host's stop has taken over
    /// since. Returns whether it did.
    pub(in crate::tenancy) fn restore_current(
        &self,
        failed: u64,
        previous: u64,
        instances: Vec<Arc<InstanceAccount>>,
    ) -> bool {
        {
            // The previous version is the one to take over again: at its
            // first instance listening, if it had not yet when the failed
            // one started.
            let mut starting = self.starting.lock().unwrap_or_else(|p| p.into_inner());
            if starting.generation == failed {
                *starting = IncomingVersion {
                    generation: previous,
                    instances: instances.clone(),
                    needed: 1,
                };
            }
        }
        let restored = self.current_generation.send_if_modified(|current| {
            let restore = *current == failed;
            if restore {
                *current = previous;
            }
            restore
        });
        if restored {
            *self.instances.lock().unwrap_or_else(|p| p.into_inner()) = instances;
            self.admission.gate.open();
            return true;
        }
        // The failed version never took over, and the previous one had not
        // either (it was still starting): it does now if one of its
        // instances listened meanwhile.
        if instances.iter().any(|i| i.is_listening()) && self.make_current(previous) {
            *self.instances.lock().unwrap_or_else(|p| p.into_inner()) = instances;
            return true;
        }
        false
    }

    /// Whether `generation` accepts new connections.
    pub fn is_current(&self, generation: u64) -> bool {
        *self.current_generation.borrow() == generation
    }

    /// Resolves once `generation` (or a later one) accepts new connections.
    pub async fn until_current(&self, generation: u64) {
        let mut current = self.current_generation.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        // u64::MAX means stopping, not that `generation` took over.
        let _ = current
            .wait_for(|g| *g >= generation && *g != STOPPED)
            .await;
    }

    /// The tenant's name.
    pub fn name(&self) -> &str {
        self.account.name()
    }

    /// Moves to `state`, keeping the last error.
    pub(in crate::tenancy) fn set_state(&self, state: State) {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if status.state != state {
            status.state = state;
            status.since = SystemTime::now();
            drop(status);
            self.state_changed.notify_waiters();
        }
    }

    /// Resolves with the state once `settled` says it is one to stop
    /// waiting at, or `None` at `deadline`. Woken by each change, not
    /// polled.
    pub async fn until_state(
        &self,
        settled: impl Fn(State) -> bool,
        deadline: tokio::time::Instant,
    ) -> Option<State> {
        loop {
            // Registered before the state is read: a change in between
            // is not missed.
            let changed = self.state_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let state = self.state();
            if settled(state) {
                return Some(state);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }

    /// Records a failure.
    pub(in crate::tenancy) fn set_error(&self, error: String) {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_error = Some(error);
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).state
    }

    /// How long it has been in its current state.
    pub fn state_for(&self) -> std::time::Duration {
        let since = self.status.lock().unwrap_or_else(|p| p.into_inner()).since;
        since.elapsed().unwrap_or_default()
    }

    /// Everything the admin endpoint shows.
    pub fn snapshot(&self) -> Snapshot {
        let status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let c = &self.account.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let config = self.config();
        Snapshot {
            name: self.name().to_owned(),
            component: config.component.to_string(),
            generation: *self.current_generation.borrow(),
            state: status.state,
            state_for_secs: status.since.elapsed().map_or(0.0, |d| d.as_secs_f64()),
            listen: config.listen.iter().map(ToString::to_string).collect(),
            last_error: status.last_error.clone(),
            restarts: get(&c.restarts),
            connections_open: get(&c.connections_open),
            connections_accepted: get(&c.connections_accepted),
            connections_refused: get(&c.connections_refused),
            outbound_connections_open: get(&c.outbound_open),
            traps: get(&c.traps),
            cpu_limit_kills: get(&c.cpu_limit_kills),
            memory_refusals: get(&c.memory_refusals),
            capability_refusals: get(&c.capability_refusals),
            instances: self
                .instances()
                .iter()
                .map(|i| InstanceSnapshot {
                    index: i.index,
                    listening: i.is_listening(),
                    connections_open: get(&i.open),
                    connections_accepted: get(&i.accepted),
                    restarts: get(&i.restarts),
                    cpu_yields: get(&i.cpu_yields),
                })
                .collect(),
        }
    }
}

impl Tenancy for Tenant {
    fn host_endpoints(&self) -> &Arc<crate::policy::HostEndpoints> {
        &self.endpoints
    }

    fn account(&self) -> &Arc<Account> {
        &self.account
    }

    fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    fn listener(&self, addr: SocketAddr) -> Option<Arc<TcpListener>> {
        Tenant::listener(self, addr)
    }

    fn may_accept(&self, generation: u64) -> bool {
        self.is_current(generation)
    }

    fn defer_accept(&self, instance: &InstanceAccount) -> bool {
        let siblings = self.instances.lock().unwrap_or_else(|p| p.into_inner());
        if siblings.len() < 2 || !self.is_current(instance.generation) {
            return false;
        }
        crate::limits::admission::defer_to_sibling(instance, &siblings)
    }

    fn listening(&self, instance: &InstanceAccount) {
        instance
            .listening
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let generation = instance.generation;
        let current = *self.current_generation.borrow();
        if generation == current {
            // An instance of the current version, restarted: the tenant
            // runs again if it had none listening.
            self.set_state(State::Running);
            return;
        }
        let instances = {
            let starting = self.starting.lock().unwrap_or_else(|p| p.into_inner());
            let listening = starting
                .instances
                .iter()
                .filter(|i| i.is_listening())
                .count();
            // An older version listening again does not take over, nor one
            // whose instances are not all listening yet.
            if starting.generation != generation || listening < starting.needed {
                return;
            }
            starting.instances.clone()
        };
        // From now on new clients come to this version, unless the host is
        // stopping.
        if self.make_current(generation) {
            *self.instances.lock().unwrap_or_else(|p| p.into_inner()) = instances;
            self.set_state(State::Running);
        }
    }

    fn police(&self, peer: SocketAddr) -> Arc<Policed> {
        Policed::new(&self.account, &self.config().limits, peer)
    }

    fn open_connection(
        &self,
        peer: IpAddr,
        cap: u64,
        instance: &Arc<InstanceAccount>,
        watchdog: Option<tokio::task::AbortHandle>,
    ) -> OpenConnection {
        let listeners: Arc<dyn HostListeners> = self.listeners.clone();
        OpenConnection::new(
            &self.account,
            &self.admission,
            instance,
            peer,
            watchdog,
            cap,
            &listeners,
        )
    }

    fn max_connections(&self) -> u64 {
        u64::from(self.config().limits.max_connections)
    }
}
