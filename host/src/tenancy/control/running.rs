//! The running set of tenants: starting them (also one whose component
//! cannot be fetched yet, retried), removing them, the graceful stop, and
//! what the other parts of control share (the set, the operations lock).

use crate::config::model::{self, ComponentSource, TenantConfig};
use crate::registry::{FetchPolicy, PullError, Puller};
use crate::runtime::engine::Loader;
use crate::runtime::engine::Prepared;
use crate::runtime::workers::GuestThreads;
use crate::tenancy::supervisor::{self, Command, GuestError};
use crate::tenancy::tenant::{State, Tenant};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// A compiled component, ready to instantiate.
pub type Compiled = Arc<Prepared>;

/// One running tenant.
pub(super) struct RunningTenant {
    pub(super) tenant: Arc<Tenant>,
    /// Its compiled component; `None` while its component cannot be
    /// fetched (it is failed, and retried if the registry was unavailable).
    pub(super) pre: Option<Compiled>,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) task: Option<JoinHandle<Result<(), GuestError>>>,
    /// Retries fetching the component of a tenant that could not start.
    pub(super) retry: Option<JoinHandle<()>>,
}

impl Drop for RunningTenant {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        if let Some(retry) = &self.retry {
            retry.abort();
        }
    }
}

/// The tenants and the means to change them.
pub struct Control {
    pub(super) loader: Loader,
    /// Pulls components named `oci://`.
    pub(super) puller: Puller,
    pub(super) manifest: Option<PathBuf>,
    pub(super) running: Mutex<BTreeMap<String, RunningTenant>>,
    /// Serialises swaps and reloads.
    pub(super) ops: tokio::sync::Mutex<()>,
    /// Set once a graceful stop has begun.
    pub(super) stopping: std::sync::atomic::AtomicBool,
    /// With the pooling allocator: the instances (of all tenants) and the
    /// largest memory limit its pool was sized for at start (it cannot
    /// grow).
    pub(super) pool: Option<(usize, u64)>,
    /// The counts of removed tenants, for the host-wide metrics.
    pub(super) retired: crate::account::Counters,
    /// The manifest's `[host]` settings as they were at start (tenants
    /// left out), to tell a reload which of them it cannot apply.
    pub(super) started_with: Mutex<Option<model::Manifest>>,
    /// Reloads by outcome (see [`Control::reload_counts`]).
    pub(super) reloads: [std::sync::atomic::AtomicU64; 3],
    /// The host's own endpoints, which no tenant's grant reaches.
    pub(super) endpoints: Arc<crate::policy::HostEndpoints>,
    /// The guest threads instances run on.
    pub(super) threads: Arc<GuestThreads>,
    /// The one group of tenants this host runs (`--group`), if told.
    pub(super) group: Mutex<Option<String>>,
}

impl Control {
    /// The host's own endpoints (admin, control): what binds one records
    /// it here, and no tenant's grant reaches it.
    pub fn host_endpoints(&self) -> &crate::policy::HostEndpoints {
        &self.endpoints
    }

    /// What each tenant's supervisor runs its guests with. With the
    /// pooling allocator, whose slots every tenant shares, one replaced
    /// version may drain at a time.
    pub(super) fn supervision(&self) -> supervisor::Supervision {
        supervisor::Supervision {
            engine: self.loader.engine().clone(),
            threads: self.threads.clone(),
            draining_limit: if self.pool.is_some() {
                supervisor::MAX_DRAINING_POOLED
            } else {
                supervisor::MAX_DRAINING
            },
        }
    }

    /// How many guest threads instances run on.
    pub fn guest_threads(&self) -> usize {
        self.threads.count()
    }

    /// A control with no tenants yet; `manifest` is where reloads read from;
    /// `pool`, with the pooling allocator, is the number of instances (see
    /// [`instances_of`]) and the largest memory limit its pool was sized
    /// for.
    pub fn new(
        loader: Loader,
        puller: Puller,
        manifest: Option<PathBuf>,
        pool: Option<(usize, u64)>,
        threads: Arc<GuestThreads>,
    ) -> Arc<Self> {
        Arc::new(Control {
            loader,
            threads,
            puller,
            manifest,
            running: Mutex::new(BTreeMap::new()),
            ops: tokio::sync::Mutex::new(()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            pool,
            retired: crate::account::Counters::default(),
            started_with: Mutex::new(None),
            reloads: Default::default(),
            group: Mutex::new(None),
            endpoints: Arc::default(),
        })
    }

    /// The counts of components pulled from registries.
    pub fn pull_stats(&self) -> &crate::registry::PullStats {
        self.puller.stats()
    }

    /// Runs only the tenants of `group` from now on (reloads included).
    pub fn set_group(&self, group: Option<String>) {
        *self.group.lock().unwrap_or_else(|p| p.into_inner()) = group;
    }

    /// Records the `[host]` settings the host started with.
    pub fn set_host_settings(&self, manifest: &model::Manifest) {
        *self.started_with.lock().unwrap_or_else(|p| p.into_inner()) = Some(model::Manifest {
            tenants: Vec::new(),
            ..manifest.clone()
        });
    }

    /// The counts of tenants removed so far.
    pub fn retired(&self) -> &crate::account::Counters {
        &self.retired
    }

    pub(super) fn running(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, RunningTenant>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every tenant, in name order.
    pub fn tenants(&self) -> Vec<Arc<Tenant>> {
        self.running().values().map(|r| r.tenant.clone()).collect()
    }

    /// Graceful stop, first half: every tenant stops accepting (its
    /// addresses refuse new clients) while its open connections run on.
    pub fn stop_accepting(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        for tenant in self.tenants() {
            tenant.stop_accepting();
        }
    }

    /// Whether a graceful stop has begun.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Graceful stop, second half: resolves once every tenant has no open
    /// connection or has had its drain timeout, counted from now. Returns
    /// the connections still open then.
    pub async fn drained(&self) -> u64 {
        let start = tokio::time::Instant::now();
        let tenants = self.tenants();
        // Each against its own deadline, counted from `start`: waiting for
        // them one after another ends when the last would.
        for tenant in &tenants {
            let deadline = start + tenant.config().limits.drain_timeout;
            tenant
                .counters()
                .connections_open
                .until_zero(Some(deadline))
                .await;
        }
        tenants.iter().map(|t| t.open_connections()).sum()
    }

    /// The component files tenants run, for the file watcher.
    pub fn component_files(&self) -> Vec<PathBuf> {
        self.running()
            .values()
            .filter_map(|r| match &r.tenant.config().component {
                ComponentSource::File(path) => Some(path.clone()),
                ComponentSource::Builtin(_) | ComponentSource::Oci(_) => None,
            })
            .collect()
    }

    /// Starts a tenant on its (already open) `listeners`.
    pub fn start(&self, config: TenantConfig, listeners: Vec<Arc<TcpListener>>, pre: Compiled) {
        let name = config.name.clone();
        let tenant = Arc::new(Tenant::new(config, listeners, self.endpoints.clone()));
        let (commands, inbox) = mpsc::channel(4);
        info!(
            tenant = name,
            component = %tenant.config().component,
            listen = ?tenant.config().listen,
            "starting tenant"
        );
        // Registered before its guest can start listening, so a request
        // naming it cannot arrive first.
        let mut running = self.running();
        let task = tokio::spawn(supervisor::supervise(
            self.supervision(),
            pre.clone(),
            tenant.clone(),
            inbox,
        ));
        running.insert(
            name,
            RunningTenant {
                tenant,
                pre: Some(pre),
                commands,
                task: Some(task),
                retry: None,
            },
        );
    }

    /// Registers a tenant whose component could not be fetched at start
    /// (`why`): failed, its addresses refusing clients, its neighbours
    /// unaffected. While the registry was only unavailable (`retry`), the
    /// fetch is tried again with backoff until it starts, or a reload or
    /// swap starts it first.
    pub fn start_unfetched(
        self: &Arc<Self>,
        config: TenantConfig,
        listeners: Vec<Arc<TcpListener>>,
        why: String,
        retry: bool,
    ) {
        let name = config.name.clone();
        let tenant = Arc::new(Tenant::new(config, listeners, self.endpoints.clone()));
        tenant.close_listeners();
        tenant.set_error(why.clone());
        tenant.set_state(State::Failed);
        warn!(
            tenant = name,
            "tenant not started: its component cannot be fetched{}: {why}",
            if retry { " (retrying)" } else { "" }
        );
        let retry = retry.then(|| tokio::spawn(retry_fetch(Arc::downgrade(self), name.clone())));
        // No supervisor: a swap or reload finds it failed and starts it.
        let (commands, _) = mpsc::channel(1);
        self.running().insert(
            name,
            RunningTenant {
                tenant,
                pre: None,
                commands,
                task: None,
                retry,
            },
        );
    }

    /// One retry of [`Control::start_unfetched`]'s fetch for tenant
    /// `name`: whether to stop retrying (it started, a reload or swap
    /// started or removed it, or the failure is not transient). The pull
    /// is made before the operations lock is taken (a slow registry holds
    /// no swap or reload up); the component is then loaded from the store.
    pub(super) async fn retry_unfetched(&self, name: &str) -> bool {
        let unfetched = |this: &Self| {
            this.running()
                .get(name)
                .filter(|r| r.pre.is_none())
                .map(|r| r.tenant.clone())
        };
        let Some(tenant) = unfetched(self) else {
            return true;
        };
        let mut config = (*tenant.config()).clone();
        if let ComponentSource::Oci(reference) = &config.component {
            match self.puller.fetch(reference, FetchPolicy::START).await {
                Ok(fetched) => config.component = ComponentSource::Oci(fetched.reference),
                Err(e) => {
                    let unavailable = matches!(e, PullError::Unavailable(_));
                    tenant.set_error(format!("{}: tenant.component: {e}", config.component_at));
                    return !unavailable;
                }
            }
        }
        let _one_at_a_time = self.ops.lock().await;
        if self.is_stopping() {
            return true;
        }
        // Still waiting for its component (no reload or swap came first)?
        let Some(tenant) = unfetched(self) else {
            return true;
        };
        match self
            .load(&config.component, &config.component_at, FetchPolicy::START)
            .await
        {
            Ok((component, pre)) => {
                let config = Arc::new(TenantConfig {
                    component,
                    ..config
                });
                // Failed, so the swap starts it again.
                if let Err(e) = self.swap_to(name, config, pre).await {
                    tenant.set_error(e);
                }
                true
            }
            Err(e) => {
                tenant.set_error(format!("{e:#}"));
                !is_unavailable(&e)
            }
        }
    }

    /// Whether tenant `name` was left stopped or failed by its policy.
    pub(super) fn is_stopped_for_good(&self, name: &str) -> bool {
        self.running()
            .get(name)
            .is_some_and(|r| matches!(r.tenant.state(), State::Failed | State::Stopped))
    }

    /// Hands over a tenant's supervisor task (for the one-tenant mode, whose
    /// host ends with its guest).
    pub fn take_task(&self, name: &str) -> Option<JoinHandle<Result<(), GuestError>>> {
        self.running().get_mut(name).and_then(|r| r.task.take())
    }

    /// The engine every tenant's components are compiled for.
    pub fn engine(&self) -> &wasmtime::Engine {
        self.loader.engine()
    }

    /// Removes tenant `name`: its addresses refuse new clients at once;
    /// the connections it has (on every version) run on until they close
    /// or its drain timeout passes, as on a swap or at shutdown.
    pub(super) fn remove(&self, name: &str) {
        let Some(r) = self.running().remove(name) else {
            return;
        };
        r.tenant.set_state(State::Stopped);
        r.tenant.stop_accepting();
        r.tenant.close_listeners();
        self.retired.absorb(r.tenant.counters());
        let open = r.tenant.open_connections();
        info!(
            tenant = name,
            open, "tenant removed; draining {open} connections"
        );
        tokio::spawn(drain_removed(r));
    }
}

/// Whether `error` is a registry that could not be reached (worth
/// retrying), as opposed to an answer that cannot be run.
pub fn is_unavailable(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<PullError>(),
        Some(PullError::Unavailable(_))
    )
}

/// Retries [`Control::start_unfetched`]'s fetch, from every 2 s doubling
/// to every minute, until the tenant starts or needs no retry.
pub(super) async fn retry_fetch(control: std::sync::Weak<Control>, name: String) {
    let mut backoff = Duration::from_secs(2);
    loop {
        tokio::time::sleep(backoff).await;
        let Some(control) = control.upgrade() else {
            return;
        };
        if control.retry_unfetched(&name).await {
            return;
        }
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

/// How many guest instances `tenants` run at once on `threads` guest
/// threads (each tenant's `instances`, "auto" as one per guest thread),
/// not counting swaps.
pub fn instances_of(tenants: &[TenantConfig], threads: usize) -> usize {
    tenants
        .iter()
        .map(|t| t.limits.instances.resolve(threads) as usize)
        .sum()
}

/// Lets a removed tenant's open connections finish, up to its drain
/// timeout, then stops it (dropping `running` stops its guest).
pub(super) async fn drain_removed(running: RunningTenant) {
    let tenant = running.tenant.clone();
    let deadline = tokio::time::Instant::now() + tenant.config().limits.drain_timeout;
    tenant
        .counters()
        .connections_open
        .until_zero(Some(deadline))
        .await;
    let left = tenant.open_connections();
    if left > 0 {
        warn!(
            tenant = tenant.name(),
            left, "removed tenant's drain timeout passed: closing {left} connections"
        );
    }
    drop(running);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::manifest;
    use crate::runtime::engine::new_engine;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A host made in-process as the process makes one (no subprocess, no
    /// global state): its control, and the address of its one tenant.
    async fn host(component: &str) -> (Arc<Control>, std::net::SocketAddr) {
        // The default CPU limit: it counts the guest thread's CPU time, so
        // other tests running on the same two cores cannot starve a guest
        // past it.
        let text = format!(
            "[[tenant]]\nname = \"t\"\ncomponent = \"{component}\"\nlisten = [\"127.0.0.1:0\"]\n"
        );
        let manifest = manifest::parse(std::path::Path::new("tenants.toml"), &text).unwrap();
        let loader = Loader::new(new_engine(None).unwrap(), None).unwrap();
        let puller = Puller::new(manifest.registry.clone(), None).unwrap();
        let control = Control::new(loader, puller, None, None, GuestThreads::on_caller());
        let mut tenant = manifest.tenants.into_iter().next().unwrap();
        let listener = crate::tenancy::listeners::open(tenant.listen[0], "").unwrap();
        let addr = listener.local_addr().unwrap();
        tenant.listen = vec![addr];
        let (_, pre) = control
            .load(&tenant.component, "", FetchPolicy::START)
            .await
            .unwrap();
        control.start(tenant, vec![Arc::new(listener)], pre);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let state = control.tenants()[0]
            .until_state(|s| s != State::Starting, deadline)
            .await;
        assert_eq!(state, Some(State::Running));
        (control, addr)
    }

    /// One request to `control`'s tenant at `addr`, and its reply, within
    /// a bound; a failure names the tenant's state and last error.
    async fn ask(control: &Control, addr: std::net::SocketAddr, message: &[u8]) -> String {
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream.write_all(message).await?;
            let mut reply = vec![0; 2048];
            let n = stream.read(&mut reply).await?;
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&reply[..n]).into_owned())
        };
        let exchange = async {
            exchange.await.unwrap_or_else(|e| {
                let tenant = control.tenants()[0].snapshot();
                panic!("{e}; the tenant: {tenant:?}")
            })
        };
        tokio::time::timeout(Duration::from_secs(20), exchange)
            .await
            .expect("a reply within 20 s")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_hosts_run_side_by_side_in_one_process_and_swap_apart() {
        let (a, a_addr) = host("builtin:seed").await;
        let (b, b_addr) = host("builtin:seed").await;
        assert!(
            ask(&a, a_addr, b"hi\n")
                .await
                .starts_with("rust socket server : ")
        );
        assert!(
            ask(&b, b_addr, b"hi\n")
                .await
                .starts_with("rust socket server : ")
        );
        // A live swap on one host leaves the other as it was.
        a.swap("t", ComponentSource::Builtin("echo".into()), None)
            .await
            .unwrap();
        assert_eq!(ask(&a, a_addr, b"hi\n").await, "hi\n");
        assert!(
            ask(&b, b_addr, b"hi\n")
                .await
                .starts_with("rust socket server : ")
        );
        // So does an endpoint one of them serves: its grants alone refuse it.
        a.host_endpoints().forbid(b_addr);
        assert!(a.host_endpoints().reached_by(b_addr));
        assert!(!b.host_endpoints().reached_by(b_addr));
        // A graceful stop of one: nothing open, so drained at once.
        a.stop_accepting();
        assert_eq!(a.drained().await, 0);
        assert!(!b.is_stopping());
    }
}
