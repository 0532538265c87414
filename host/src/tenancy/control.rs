//! The running set of tenants and what an operator can do to it while the
//! host runs: swap a tenant's component live, reload the manifest (adding,
//! removing and changing tenants without touching the others). Shared by
//! SIGHUP, the file watchers (`tenancy::watch`) and the control endpoint;
//! operations run one at a time.

use crate::config::manifest;
use crate::config::model::{self, ComponentSource, TenantConfig};
use crate::config::reload::{Current, ReloadPlan, plan_reload};
use crate::registry::{FetchPolicy, PullError, Puller};
use crate::runtime::builtins;
use crate::runtime::engine::Prepared;
use crate::runtime::engine::{self, Loader};
use crate::tenancy::supervisor::{self, Command, GuestError};
use crate::tenancy::tenant::{State, Tenant};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// A compiled component, ready to instantiate.
pub type Pre = Arc<Prepared>;

/// One running tenant.
struct Running {
    tenant: Arc<Tenant>,
    /// Its compiled component; `None` while its component cannot be
    /// fetched (it is failed, and retried if the registry was unavailable).
    pre: Option<Pre>,
    commands: mpsc::Sender<Command>,
    task: Option<JoinHandle<Result<(), GuestError>>>,
    /// Retries fetching the component of a tenant that could not start.
    retry: Option<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        if let Some(retry) = &self.retry {
            retry.abort();
        }
    }
}

/// What a manifest reload did.
#[derive(Debug, Default, Serialize)]
pub struct ReloadReport {
    /// Tenants started.
    pub added: Vec<String>,
    /// Tenants stopped and removed.
    pub removed: Vec<String>,
    /// Tenants swapped to a new component or configuration.
    pub changed: Vec<String>,
    /// Tenants left exactly as they were.
    pub unchanged: Vec<String>,
    /// Tenants whose change failed (they keep running as they were, or stay
    /// stopped or failed).
    pub failed: BTreeMap<String, String>,
    /// `[host]` settings changed in the manifest, which take effect only
    /// when the host restarts.
    pub need_restart: Vec<&'static str>,
}

/// The tenants and the means to change them.
pub struct Control {
    loader: Loader,
    /// Pulls components named `oci://`.
    puller: Puller,
    manifest: Option<PathBuf>,
    running: Mutex<BTreeMap<String, Running>>,
    /// Serialises swaps and reloads.
    ops: tokio::sync::Mutex<()>,
    /// Set once a graceful stop has begun.
    stopping: std::sync::atomic::AtomicBool,
    /// With the pooling allocator: the instances (of all tenants) and the
    /// largest memory limit its pool was sized for at start (it cannot
    /// grow).
    pool: Option<(usize, u64)>,
    /// The counts of removed tenants, for the host-wide metrics.
    retired: crate::account::Counters,
    /// The manifest's `[host]` settings as they were at start (tenants
    /// left out), to tell a reload which of them it cannot apply.
    started_with: Mutex<Option<model::Manifest>>,
    /// Reloads by outcome (see [`Control::reload_counts`]).
    reloads: [std::sync::atomic::AtomicU64; 3],
    /// The one group of tenants this host runs (`--group`), if told.
    group: Mutex<Option<String>>,
}

impl Control {
    /// A control with no tenants yet; `manifest` is where reloads read from;
    /// `pool`, with the pooling allocator, is the number of instances (see
    /// [`instances_of`]) and the largest memory limit its pool was sized
    /// for.
    pub fn new(
        loader: Loader,
        puller: Puller,
        manifest: Option<PathBuf>,
        pool: Option<(usize, u64)>,
    ) -> Arc<Self> {
        Arc::new(Control {
            loader,
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
        })
    }

    /// The counts of components pulled from registries.
    pub fn pull_stats(&self) -> &crate::registry::PullStats {
        self.puller.stats()
    }

    /// Whether a swap request may pull `reference` (`[host] registries`).
    pub fn may_pull(&self, reference: &crate::config::source::OciRef) -> Result<(), String> {
        let settings = self.puller.settings();
        if settings.allows(reference) {
            return Ok(());
        }
        Err(if settings.allowed.is_empty() {
            format!(
                "{reference} is not in a registry swaps may pull from: [host] registries lists none"
            )
        } else {
            format!(
                "{reference} is not in a registry swaps may pull from ([host] registries: {})",
                settings.allowed.join(", ")
            )
        })
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

    /// Reads the component file `path` for a swap asked for over the
    /// control endpoint: only a file beneath one of the `[host]
    /// component_dirs`, opened once, beneath that directory, without
    /// following any link out of it (crate::runtime::engine::read_beneath),
    /// so nothing done to the path after this call changes what is loaded:
    /// the swap loads these bytes. Built-in guests need no check; files a
    /// manifest names are the operator's own.
    pub fn read_swappable(&self, path: &std::path::Path) -> Result<Vec<u8>, String> {
        match self.read_beneath_allowed(path) {
            Some(read) => read.map_err(|e| e.to_string()),
            None => {
                let listed: Vec<String> = self
                    .component_dirs()
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect();
                Err(format!(
                    "{} is outside the directories a swap may load from ({}): [host] component_dirs lists them",
                    path.display(),
                    listed.join(", ")
                ))
            }
        }
    }

    /// The `[host] component_dirs` the host started with.
    fn component_dirs(&self) -> Vec<PathBuf> {
        self.started_with
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|m| m.component_dirs.clone())
            .unwrap_or_default()
    }

    /// Reads `path` beneath the `[host] component_dirs` directory it names,
    /// or `None` if it names none of them.
    fn read_beneath_allowed(
        &self,
        path: &std::path::Path,
    ) -> Option<Result<Vec<u8>, engine::LoadError>> {
        for dir in &self.component_dirs() {
            // The directory as written, or as it resolves (the path asked
            // for may name either).
            let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
            for dir in [dir, &real] {
                if let Ok(relative) = path.strip_prefix(dir) {
                    return Some(engine::read_beneath(dir, relative));
                }
            }
        }
        None
    }

    /// Reads a component file a tenant runs, again (the file watcher):
    /// beneath the `[host] component_dirs` when it is under one (where a
    /// swap over the control endpoint may have put it), else by its path
    /// (a file the manifest names, the operator's own).
    fn reread(&self, path: &std::path::Path) -> Result<Vec<u8>, engine::LoadError> {
        self.read_beneath_allowed(path)
            .unwrap_or_else(|| engine::read(path))
    }

    /// The counts of tenants removed so far.
    pub fn retired(&self) -> &crate::account::Counters {
        &self.retired
    }

    fn running(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Running>> {
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

    /// Changes (swaps, reloads) are refused once the host is stopping.
    fn refuse_if_stopping(&self) -> Result<(), String> {
        if self.is_stopping() {
            Err("the host is stopping".into())
        } else {
            Ok(())
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
    pub fn start(&self, config: TenantConfig, listeners: Vec<Arc<TcpListener>>, pre: Pre) {
        let name = config.name.clone();
        let tenant = Arc::new(Tenant::new(config, listeners));
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
            self.loader.engine().clone(),
            pre.clone(),
            tenant.clone(),
            inbox,
        ));
        running.insert(
            name,
            Running {
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
        let tenant = Arc::new(Tenant::new(config, listeners));
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
            Running {
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
    async fn retry_unfetched(&self, name: &str) -> bool {
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
                if let Err(e) = self.restart(name, &tenant, config, pre).await {
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
    fn is_stopped_for_good(&self, name: &str) -> bool {
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

    /// Reads or pulls, checks and compiles (or finds compiled) the
    /// component `source`, named in errors by `at`: the source as it runs
    /// (a tag pinned to the digest it resolved to) and the component. A
    /// tag the registry cannot resolve now falls back, with `stale_ok`, to
    /// the digest it last had. On the host's async threads, it lets the
    /// runtime move their other tasks elsewhere while it compiles
    /// (seconds, for a cold component).
    pub async fn load(
        &self,
        source: &ComponentSource,
        at: &str,
        policy: FetchPolicy,
    ) -> anyhow::Result<(ComponentSource, Pre)> {
        let ComponentSource::Oci(reference) = source else {
            let pre = off_the_async_threads(|| load_component(&self.loader, source, at))?;
            return Ok((source.clone(), pre));
        };
        let located = |e: anyhow::Error| {
            if at.is_empty() {
                e
            } else {
                e.context(format!("{at}: tenant.component"))
            }
        };
        let fetched = self
            .puller
            .fetch(reference, policy)
            .await
            .map_err(|e| located(e.into()))?;
        let label = fetched.reference.to_string();
        let pre = self.compile(&label, &fetched.bytes).map_err(located)?;
        Ok((ComponentSource::Oci(fetched.reference), pre))
    }

    /// Compiles (or finds) the component `bytes`, read already, named
    /// `label` in errors, as [`Control::load`] does.
    pub fn compile(&self, label: &str, bytes: &[u8]) -> anyhow::Result<Pre> {
        off_the_async_threads(|| Ok(self.loader.load(label, bytes)?))
    }
}

/// Runs `load` (compiling, seconds for a cold component) letting the
/// runtime move the other tasks of this async thread elsewhere meanwhile.
fn off_the_async_threads(load: impl FnOnce() -> anyhow::Result<Pre>) -> anyhow::Result<Pre> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(load)
        }
        _ => load(),
    }
}

impl Control {
    /// Swaps tenant `name` to the component `source`, live. Fails, leaving
    /// the running version serving, if the component cannot be read,
    /// compiled, linked, or its guest does not start listening.
    pub async fn swap(
        &self,
        name: &str,
        source: ComponentSource,
        bytes: Option<Vec<u8>>,
    ) -> Result<Duration, String> {
        let _one_at_a_time = self.ops.lock().await;
        self.refuse_if_stopping()?;
        let tenant = self
            .running()
            .get(name)
            .map(|r| r.tenant.clone())
            .ok_or_else(|| format!("no tenant named {name:?}"))?;
        let (source, pre) = match (&source, bytes) {
            (ComponentSource::File(path), Some(bytes)) => self
                .compile(&path.display().to_string(), &bytes)
                .map(|pre| (source.clone(), pre)),
            _ => self.load(&source, "", FetchPolicy::SWAP).await,
        }
        .map_err(|e| format!("{e:#}"))?;
        let config = TenantConfig {
            component: source,
            ..(*tenant.config()).clone()
        };
        self.swap_to(name, Arc::new(config), pre).await
    }

    async fn swap_to(
        &self,
        name: &str,
        config: Arc<TenantConfig>,
        pre: Pre,
    ) -> Result<Duration, String> {
        let (commands, tenant) = {
            let running = self.running();
            let r = running
                .get(name)
                .ok_or_else(|| format!("no tenant named {name:?}"))?;
            (r.commands.clone(), r.tenant.clone())
        };
        if matches!(tenant.state(), State::Failed | State::Stopped) {
            return self.restart(name, &tenant, config, pre).await;
        }
        let config_component = config.component.to_string();
        let (reply, outcome) = oneshot::channel();
        commands
            .send(Command::Swap {
                config,
                pre: pre.clone(),
                reply,
            })
            .await
            .map_err(|_| format!("tenant {name:?} is not running"))?;
        let result = outcome
            .await
            .unwrap_or_else(|_| Err(format!("tenant {name:?} stopped during the swap")));
        match &result {
            Ok(took) => {
                if let Some(r) = self.running().get_mut(name) {
                    r.pre = Some(pre);
                }
                info!(
                    tenant = name,
                    component = %config_component,
                    ms = took.as_millis(),
                    "live swap done"
                );
            }
            Err(e) => warn!(
                tenant = name,
                "live swap refused, the running version keeps serving: {e}"
            ),
        }
        result
    }

    /// Starts a tenant its restart policy left stopped or failed again, with
    /// `config` and `pre`: its addresses are listened on anew and it gets a
    /// fresh supervisor (and crash-loop count). Resolves once it listens.
    async fn restart(
        &self,
        name: &str,
        tenant: &Arc<Tenant>,
        config: Arc<TenantConfig>,
        pre: Pre,
    ) -> Result<Duration, String> {
        let started = std::time::Instant::now();
        let (old_config, old_state) = (tenant.config(), tenant.state());
        let mut opened = Vec::new();
        for addr in &config.listen {
            if tenant.listener(*addr).is_none() {
                let listener = crate::tenancy::listeners::host_listener(*addr)
                    .map_err(|e| format!("cannot listen on {addr} again: {e}"))?;
                opened.push((*addr, Arc::new(listener)));
            }
        }
        tenant.add_listeners(opened);
        tenant.set_config(config);
        tenant.set_state(State::Starting);
        let (commands, inbox) = mpsc::channel(4);
        let task = tokio::spawn(supervisor::supervise(
            self.loader.engine().clone(),
            pre.clone(),
            tenant.clone(),
            inbox,
        ));
        let previous = self.running().get_mut(name).map(|r| {
            (
                std::mem::replace(&mut r.commands, commands),
                r.pre.replace(pre),
                // Replacing the handle of the supervisor that ended.
                r.task.replace(task),
            )
        });
        info!(tenant = name, "restarting a {old_state} tenant on request");
        let outcome = self.until_started(tenant, started).await;
        if outcome.is_err() {
            // All or nothing, as a failed swap of a running tenant: the
            // attempt is stopped, and the tenant is left as it was: its
            // configuration, its state, its addresses closed.
            let attempt = previous.and_then(|(commands, pre, task)| {
                let mut running = self.running();
                let r = running.get_mut(name)?;
                r.commands = commands;
                r.pre = pre;
                std::mem::replace(&mut r.task, task)
            });
            if let Some(attempt) = attempt {
                // Gone before the state is restored, so it cannot write it.
                attempt.abort();
                let _ = attempt.await;
            }
            tenant.close_listeners();
            tenant.set_config(old_config);
            tenant.set_state(old_state);
        }
        outcome
    }

    /// Waits until `tenant`, started again at `started`, runs: how long it
    /// took, or why it does not.
    async fn until_started(
        &self,
        tenant: &Tenant,
        started: std::time::Instant,
    ) -> Result<Duration, String> {
        let name = tenant.name();
        let deadline = tokio::time::Instant::from_std(started) + supervisor::SWAP_TIMEOUT;
        match tenant
            .until_state(|state| state != State::Starting, deadline)
            .await
        {
            Some(State::Running) => {
                let took = started.elapsed();
                info!(tenant = name, ms = took.as_millis(), "tenant restarted");
                Ok(took)
            }
            None => Err(format!(
                "it did not listen within {:?}",
                supervisor::SWAP_TIMEOUT
            )),
            Some(state) => {
                let why = tenant
                    .snapshot()
                    .last_error
                    .unwrap_or_else(|| "it stopped".into());
                Err(format!("restarted, but it is {state} again: {why}"))
            }
        }
    }

    /// Swaps every tenant running the component file `path` whose content
    /// changed (the file watcher's trigger). Decided under the operations
    /// lock, against what each tenant runs then: a swap or reload that
    /// came first is not undone.
    pub async fn component_file_changed(&self, path: &Path) {
        let _one_at_a_time = self.ops.lock().await;
        if self.is_stopping() {
            return;
        }
        let source = ComponentSource::File(path.to_owned());
        let tenants: Vec<(String, Option<Pre>)> = self
            .running()
            .iter()
            .filter(|(_, r)| r.tenant.config().component == source)
            .map(|(name, r)| (name.clone(), r.pre.clone()))
            .collect();
        if tenants.is_empty() {
            return;
        }
        let pre = match self
            .reread(path)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| self.compile(&path.display().to_string(), &bytes))
        {
            Ok(pre) => pre,
            Err(e) => {
                for (name, _) in &tenants {
                    warn!(
                        tenant = name,
                        "component file changed but cannot be used, keeping the running version: {e:#}"
                    );
                }
                return;
            }
        };
        for (name, running_pre) in tenants {
            // The same bytes (e.g. touched, or written back): nothing to do.
            if running_pre.is_some_and(|running| Arc::ptr_eq(&pre, &running)) {
                continue;
            }
            info!(tenant = name, file = %path.display(), "component file changed: swapping");
            let Some(tenant) = self.running().get(&name).map(|r| r.tenant.clone()) else {
                continue;
            };
            let config = TenantConfig {
                component: source.clone(),
                ..(*tenant.config()).clone()
            };
            let _ = self.swap_to(&name, Arc::new(config), pre.clone()).await;
        }
    }

    /// Re-reads the manifest and applies the difference. Nothing changes if
    /// the manifest is invalid, a new component does not load, or a new
    /// address cannot be listened on. Counted by outcome (see
    /// [`Control::reload_counts`]).
    pub async fn reload(&self) -> Result<ReloadReport, String> {
        let result = self.reload_uncounted().await;
        let outcome = match &result {
            Ok(report) if report.failed.is_empty() => 0,
            Ok(_) => 1,
            Err(_) => 2,
        };
        self.reloads[outcome].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        result
    }

    /// Reloads by outcome: applied whole, applied with some tenants'
    /// changes failed, refused (nothing changed).
    pub fn reload_counts(&self) -> [(&'static str, u64); 3] {
        let get = |i: usize| self.reloads[i].load(std::sync::atomic::Ordering::Relaxed);
        [
            ("applied", get(0)),
            ("partial", get(1)),
            ("refused", get(2)),
        ]
    }

    async fn reload_uncounted(&self) -> Result<ReloadReport, String> {
        self.refuse_if_stopping()?;
        let path = self
            .manifest
            .as_ref()
            .ok_or("there is no manifest to reload (the host runs one tenant)")?;
        let mut manifest = manifest::load(path).map_err(|e| e.to_string())?;
        let group = self.group.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(group) = group {
            manifest.only_group(&group)?;
        }
        // Pulled before the operations lock is taken, all at once: a slow
        // registry holds no swap or reload up, and below each component
        // is loaded from the store, pinned to what was pulled.
        self.prefetch(&mut manifest.tenants).await?;
        let _one_at_a_time = self.ops.lock().await;
        self.refuse_if_stopping()?;
        let need_restart = self
            .started_with
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|started| started.host_keys_changed(&manifest))
            .unwrap_or_default();
        self.fits_pool(&manifest)?;

        // Prepare everything that can fail before changing anything.
        let existing: HashMap<String, (Arc<TenantConfig>, Option<Pre>)> = self
            .running()
            .iter()
            .map(|(name, r)| (name.clone(), (r.tenant.config(), r.pre.clone())))
            .collect();
        let prepared = self.prepare_reload(manifest.tenants, &existing).await?;
        let plan = self.plan(&existing, &prepared);

        let mut report = ReloadReport {
            need_restart,
            ..ReloadReport::default()
        };
        for name in plan.remove.clone() {
            self.remove(&name);
            report.removed.push(name);
        }
        self.apply_reload(&plan, prepared, &mut report).await;
        if !report.need_restart.is_empty() {
            warn!(
                keys = ?report.need_restart,
                "manifest reload: {} changed, which takes effect only when the host restarts",
                report.need_restart.join(", ")
            );
        }
        info!(
            added = report.added.len(),
            removed = report.removed.len(),
            changed = report.changed.len(),
            unchanged = report.unchanged.len(),
            failed = report.failed.len(),
            "manifest reloaded"
        );
        Ok(report)
    }

    /// Fetches every `tenants`' component named `oci://` at once, pinning
    /// each to the digest fetched: the first failure fails the reload.
    async fn prefetch(&self, tenants: &mut [TenantConfig]) -> Result<(), String> {
        let fetches = tenants.iter().map(|t| async move {
            match &t.component {
                ComponentSource::Oci(reference) => Some(
                    self.puller
                        .fetch(reference, FetchPolicy::RELOAD)
                        .await
                        .map_err(|e| format!("{}: tenant.component: {e}", t.component_at)),
                ),
                _ => None,
            }
        });
        let fetched = futures_util::future::join_all(fetches).await;
        for (tenant, fetched) in tenants.iter_mut().zip(fetched) {
            if let Some(fetched) = fetched {
                tenant.component = ComponentSource::Oci(fetched?.reference);
            }
        }
        Ok(())
    }

    /// Whether `manifest` fits the pooling allocator as it was sized at
    /// start (it cannot grow).
    fn fits_pool(&self, manifest: &model::Manifest) -> Result<(), String> {
        let Some((instances, max_memory)) = self.pool else {
            return Ok(());
        };
        let wanted = instances_of(&manifest.tenants);
        if wanted > instances {
            return Err(format!(
                "the pooling allocator was sized at start for {instances} guest instances, and the manifest's tenants run {wanted}: restart the host to grow it"
            ));
        }
        if let Some(t) = manifest
            .tenants
            .iter()
            .find(|t| t.limits.max_memory > max_memory)
        {
            return Err(format!(
                "tenant '{}': max_memory {} is above the {max_memory} bytes the pooling allocator was sized for at start: restart the host to grow it",
                t.name, t.limits.max_memory
            ));
        }
        Ok(())
    }

    /// Opens the listeners a reload newly grants and compiles every
    /// wanted tenant's component: all that can fail, before anything
    /// changes.
    async fn prepare_reload(
        &self,
        wanted: Vec<TenantConfig>,
        existing: &HashMap<String, (Arc<TenantConfig>, Option<Pre>)>,
    ) -> Result<Vec<Reloaded>, String> {
        let mut prepared = Vec::new();
        for mut config in wanted {
            let old = existing.get(&config.name);
            let mut listeners = Vec::new();
            for (i, addr) in config.listen.iter_mut().enumerate() {
                // Port 0 means "any free port": a tenant that already has one
                // keeps it.
                if addr.port() == 0
                    && let Some(held) = old
                        .and_then(|(c, _)| c.listen.get(i))
                        .filter(|a| a.ip() == addr.ip())
                {
                    *addr = *held;
                }
                if old.is_some_and(|(c, _)| c.listen.contains(addr)) {
                    continue;
                }
                let listener = crate::tenancy::listeners::host_listener(*addr).map_err(|e| {
                    format!("tenant '{}': cannot listen on {addr}: {e}", config.name)
                })?;
                *addr = listener.local_addr().unwrap_or(*addr);
                listeners.push((*addr, Arc::new(listener)));
            }
            // A tag is resolved again: one that moved is a change (a
            // swap); a registry that cannot be reached keeps what runs.
            let (component, pre) = self
                .load(&config.component, &config.component_at, FetchPolicy::RELOAD)
                .await
                .map_err(|e| format!("{e:#}"))?;
            config.component = component;
            prepared.push((config, listeners, pre));
        }
        Ok(prepared)
    }

    /// What the reload is to do: [`plan_reload`] over what runs
    /// (`existing`) and what is `prepared`, components compared by identity
    /// (the loader compiles equal bytes once).
    fn plan(
        &self,
        existing: &HashMap<String, (Arc<TenantConfig>, Option<Pre>)>,
        prepared: &[Reloaded],
    ) -> ReloadPlan {
        let current: BTreeMap<String, Current<'_, *const ()>> = existing
            .iter()
            .map(|(name, (config, pre))| {
                let now = Current {
                    config,
                    component: pre
                        .as_ref()
                        .map_or(std::ptr::null(), |pre| Arc::as_ptr(pre).cast::<()>()),
                    stopped: self.is_stopped_for_good(name),
                };
                (name.clone(), now)
            })
            .collect();
        let wanted: Vec<(&TenantConfig, *const ())> = prepared
            .iter()
            .map(|(config, _, pre)| (config, Arc::as_ptr(pre).cast::<()>()))
            .collect();
        plan_reload(&current, &wanted)
    }

    /// Removes tenant `name`: its addresses refuse new clients at once;
    /// the connections it has (on every version) run on until they close
    /// or its drain timeout passes, as on a swap or at shutdown.
    fn remove(&self, name: &str) {
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

    /// Starts the tenants `plan` adds, swaps those it changes, and keeps
    /// the rest, into `report`.
    async fn apply_reload(
        &self,
        plan: &ReloadPlan,
        prepared: Vec<Reloaded>,
        report: &mut ReloadReport,
    ) {
        for (config, listeners, pre) in prepared {
            let name = config.name.clone();
            if plan.add.contains(&name) {
                self.start(config, listeners.into_iter().map(|(_, l)| l).collect(), pre);
                report.added.push(name);
                continue;
            }
            if plan.keep.contains(&name) {
                // Only its place in the file may differ: keep that current.
                if let Some(r) = self.running().get(&name) {
                    r.tenant.set_config(Arc::new(config));
                }
                report.unchanged.push(name);
                continue;
            }
            let tenant = self.running().get(&name).map(|r| r.tenant.clone());
            let Some(tenant) = tenant else { continue };
            tenant.add_listeners(listeners.iter().cloned());
            let keep_addrs = config.listen.clone();
            let old_addrs = tenant.config().listen.clone();
            match self.swap_to(&name, Arc::new(config), pre).await {
                Ok(_) => {
                    tenant.retain_listeners(&keep_addrs);
                    report.changed.push(name);
                }
                Err(e) => {
                    tenant.retain_listeners(&old_addrs);
                    report.failed.insert(name, e);
                }
            }
        }
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
async fn retry_fetch(control: std::sync::Weak<Control>, name: String) {
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

/// How many guest instances `tenants` run at once (each tenant's
/// `instances`, "auto" as one per guest thread), not counting swaps.
pub fn instances_of(tenants: &[TenantConfig]) -> usize {
    let threads = crate::runtime::workers::threads();
    tenants
        .iter()
        .map(|t| t.limits.instances.resolve(threads) as usize)
        .sum()
}

/// A tenant as a reload wants it: its configuration, the listeners the
/// reload opened for it, and its compiled component.
type Reloaded = (
    TenantConfig,
    Vec<(std::net::SocketAddr, Arc<TcpListener>)>,
    Pre,
);

/// Lets a removed tenant's open connections finish, up to its drain
/// timeout, then stops it (dropping `running` stops its guest).
async fn drain_removed(running: Running) {
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

/// Reads, checks and compiles a component. Errors are prefixed with `at`
/// (the manifest line of its `component` key) when given.
pub fn load_component(loader: &Loader, source: &ComponentSource, at: &str) -> anyhow::Result<Pre> {
    let located = |e: anyhow::Error| {
        if at.is_empty() {
            e
        } else {
            e.context(format!("{at}: tenant.component"))
        }
    };
    let (label, bytes): (String, std::borrow::Cow<'static, [u8]>) = match source {
        ComponentSource::Builtin(name) => match builtins::builtin(name) {
            Some(bytes) => (source.to_string(), bytes.into()),
            None => {
                return Err(located(
                    crate::config::ConfigError(format!(
                        "there is no built-in guest named {name:?} (there are: {})",
                        builtins::builtin_names()
                    ))
                    .into(),
                ));
            }
        },
        ComponentSource::File(path) => (
            path.display().to_string(),
            engine::read(path).map_err(|e| located(e.into()))?.into(),
        ),
        ComponentSource::Oci(reference) => {
            return Err(located(anyhow::anyhow!(
                "{reference} must be pulled first (Control::load)"
            )));
        }
    };
    loader.load(&label, &bytes).map_err(|e| located(e.into()))
}
