//! The host process: starts everything from the command line or manifest
//! (listeners, guest threads, engine, tenants, endpoints, file watch), then
//! waits for signals: SIGHUP reloads, SIGINT and SIGTERM stop gracefully.

use crate::cli::Cli;
use crate::config::manifest;
use crate::config::model::{self, ComponentSource, Limits, Manifest, RestartPolicy, TenantConfig};
use crate::ops::admin;
use crate::ops::metrics::Audited;
use crate::runtime::engine::{self, Loader};
use crate::tenancy::control::{self, Control};
use crate::tenancy::listeners;
use crate::tenancy::supervisor::GuestError;
use crate::tenancy::watch;
use anyhow::Context;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tracing::{error, info, warn};

/// How the process ends, as sysexits(3) numbers them, so a supervisor can
/// tell "fix the configuration" from "retry later".
pub mod exit {
    /// Served and stopped gracefully (or the one tenant's guest ended).
    pub const OK: u8 = 0;
    /// The command line is wrong (EX_USAGE).
    pub const USAGE: u8 = 64;
    /// A resource the host needs is unavailable: an address in use or not
    /// of this machine, a registry that cannot be reached (EX_UNAVAILABLE).
    pub const UNAVAILABLE: u8 = 69;
    /// The guest or the host failed: a trap, an internal error
    /// (EX_SOFTWARE).
    pub const SOFTWARE: u8 = 70;
    /// The configuration is wrong: the manifest, a component that does not
    /// load, a setting that cannot work (EX_CONFIG).
    pub const CONFIG: u8 = 78;
    /// Stopped at once by a second SIGINT or SIGTERM, connections cut (128
    /// plus SIGINT's number, as shells report it).
    pub const FORCED: u8 = 130;
}

/// An error whose exit status is [`exit::USAGE`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// An error whose exit status is [`exit::CONFIG`].
pub use crate::config::ConfigError;

/// An error whose exit status is [`exit::UNAVAILABLE`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UnavailableError(pub String);

/// The exit status for `error`: the first cause that says.
pub fn status_of(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.is::<UsageError>() {
            return exit::USAGE;
        }
        if cause.is::<ConfigError>()
            || cause.is::<manifest::ManifestError>()
            || cause.is::<crate::runtime::engine::LoadError>()
            || matches!(
                cause.downcast_ref::<crate::registry::PullError>(),
                Some(crate::registry::PullError::Refused(_))
            )
        {
            return exit::CONFIG;
        }
        if cause.is::<UnavailableError>()
            || matches!(
                cause.downcast_ref::<crate::registry::PullError>(),
                Some(crate::registry::PullError::Unavailable(_))
            )
        {
            return exit::UNAVAILABLE;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::AddrInUse | std::io::ErrorKind::AddrNotAvailable
            )
        {
            return exit::UNAVAILABLE;
        }
    }
    exit::SOFTWARE
}

/// Runs the host as `cli` says, from logging to exit status (see [`exit`]):
/// errors are one line on standard error and a failing status, never a
/// panic.
pub fn main(cli: Cli) -> ExitCode {
    if cli.render_kubernetes {
        return render_kubernetes(&cli);
    }
    if let Some(shell) = cli.completions {
        use clap::CommandFactory;
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "tcphost",
            &mut std::io::stdout(),
        );
        return ExitCode::from(exit::OK);
    }
    if cli.man {
        use clap::CommandFactory;
        return match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
            Ok(()) => ExitCode::from(exit::OK),
            Err(e) => {
                eprintln!("error: cannot write the man page: {e}");
                ExitCode::from(exit::SOFTWARE)
            }
        };
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let log = tracing_subscriber::fmt()
        .with_writer(crate::wasi::stdio::LogWriter)
        .with_env_filter(filter);
    match cli.log_format {
        crate::cli::LogFormat::Text => log.with_ansi(std::io::stderr().is_terminal()).init(),
        // The event's fields at the top level, beside the message: what log
        // stores index.
        crate::cli::LogFormat::Json => log
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::SOFTWARE);
        }
    };
    if cli.check {
        let code = match runtime.block_on(check(&cli)) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::from(exit::OK)
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(status_of(&e))
            }
        };
        runtime.shutdown_background();
        return code;
    }
    let json = cli.log_format == crate::cli::LogFormat::Json;
    let code = match runtime.block_on(run(cli)) {
        Ok(Stopped::Gracefully) => ExitCode::from(exit::OK),
        Ok(Stopped::Forced) => ExitCode::from(exit::FORCED),
        Err(e) => {
            let status = status_of(&e);
            if json {
                // The last line too is one object, as the log's others.
                eprintln!(
                    "{}",
                    serde_json::json!({
                        "level": "ERROR",
                        "message": format!("{e:#}"),
                        "exit_status": status,
                    })
                );
            } else {
                // One line (plus a backtrace for traps), never a Rust
                // backtrace.
                eprintln!("error: {e:#}");
            }
            ExitCode::from(status)
        }
    };
    // A guest may still be computing on a worker thread; do not wait for it.
    runtime.shutdown_background();
    code
}

/// Prints the Kubernetes objects that run the manifest (see
/// crate::config::kubernetes).
fn render_kubernetes(cli: &Cli) -> ExitCode {
    let Some(path) = &cli.config else {
        eprintln!("error: --render-kubernetes needs --config");
        return ExitCode::from(exit::USAGE);
    };
    let rendered = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
        .and_then(|text| {
            let manifest = manifest::parse(path, &text).map_err(|e| e.to_string())?;
            crate::config::kubernetes::render(&manifest, &text, &cli.image)
        });
    match rendered {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(exit::CONFIG)
        }
    }
}

/// `--check`: what `run` checks before serving, without listening or
/// serving; a one-line summary of what was checked.
async fn check(cli: &Cli) -> anyhow::Result<String> {
    let Resolved {
        manifest, single, ..
    } = resolve(cli)?;
    // The engine as it would be configured (the pooling allocator sized
    // for these tenants), and every component loaded as at start.
    let control = start_control(cli, &manifest)?;
    // Each tenant with what its component asks of the host: the WASI
    // version it targets and its imports (every one provided, or the load
    // above failed; what each may reach is the tenant's grants).
    let mut tenants = String::new();
    for tenant in &manifest.tenants {
        let at = if single {
            ""
        } else {
            tenant.component_at.as_str()
        };
        let (_, pre) = control
            .load(&tenant.component, at, crate::registry::FetchPolicy::START)
            .await?;
        tenants.push_str(&format!(
            "\ntenant {}: {} (WASI {}) imports {}",
            tenant.name,
            tenant.component,
            pre.wasi_version(),
            pre.imports(control.engine()).join(", ")
        ));
    }
    let components: std::collections::BTreeSet<String> = manifest
        .tenants
        .iter()
        .map(|t| t.component.to_string())
        .collect();
    let summary = match &cli.config {
        Some(path) => format!(
            "ok: {} is valid: {} tenants, {} components loaded",
            path.display(),
            manifest.tenants.len(),
            components.len()
        ),
        None => format!("ok: {} loads and links", manifest.tenants[0].component),
    };
    Ok(summary + &tenants)
}

/// How the host stopped, when it was stopped (not failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Drained (or the one tenant's guest ended), or stopped before serving.
    Gracefully,
    /// Cut short by a second signal.
    Forced,
}

/// Runs the host as `cli` says until it is stopped.
pub async fn run(cli: Cli) -> anyhow::Result<Stopped> {
    // Before anything can listen: a signal must never find the default
    // disposition (death by signal, non-zero status) in place.
    let mut signals = Signals::new()?;

    // Read before it is loaded, so the watcher cannot miss a change made
    // while the host starts (see watch::ManifestWatcher::new).
    let loaded_hash = cli.config.as_deref().and_then(watch::manifest_hash);
    let Resolved {
        mut manifest,
        single,
        admin: admin_addr,
        control: control_at,
    } = resolve(&cli)?;
    raise_open_file_limit(&manifest);
    let watch_manifest = cli.watch || manifest.watch;
    let listeners = open_listeners(&mut manifest, single)?;
    let control = start_control(&cli, &manifest)?;
    let Some(prepared) = compile(&control, manifest, listeners, single, &mut signals).await? else {
        return Ok(Stopped::Gracefully);
    };
    let names: Vec<String> = prepared.iter().map(|(c, _, _)| c.name.clone()).collect();

    serve_endpoints(&control, admin_addr, control_at).await?;
    for (config, listeners, pre) in prepared {
        match pre {
            Ok(pre) => control.start(config, listeners, pre),
            Err((why, retry)) => control.start_unfetched(config, listeners, why, retry),
        }
    }
    info!(tenants = names.len(), "host running");
    match watch::ComponentWatcher::new(control.clone()) {
        Ok(watcher) => {
            tokio::spawn(watcher.run());
        }
        Err(e) => warn!("cannot watch component files, so changing one swaps nothing: {e}"),
    }
    if let Some(path) = cli.config.as_ref().filter(|_| watch_manifest) {
        // Asked for: a manifest that cannot be watched is an error.
        let watcher = watch::ManifestWatcher::new(control.clone(), path, loaded_hash)
            .with_context(|| format!("cannot watch the manifest {}", path.display()))?;
        tokio::spawn(watcher.run());
    }

    // The one-tenant shorthand ends with its guest; a manifest host runs
    // until it is signalled.
    let guest = single.then(|| control.take_task(&names[0])).flatten();
    serve_until_stopped(&control, guest, &mut signals).await
}

/// What the command line asks the host to run, checked whole: what a
/// start and `--check` both begin with.
struct Resolved {
    /// The manifest file, or the one-tenant shorthand's equivalent,
    /// narrowed to `--group`.
    manifest: Manifest,
    /// The one-tenant shorthand: the host ends with its guest.
    single: bool,
    /// The admin endpoint (the command line's over the manifest's).
    admin: Option<std::net::SocketAddr>,
    /// The control endpoint, its token file checked.
    control: Option<model::Control>,
}

/// Reads the manifest (or builds the one-tenant one), applies `--group`,
/// settles the endpoints and checks no tenant is granted a connection to
/// one of them.
fn resolve(cli: &Cli) -> anyhow::Result<Resolved> {
    let single = cli.config.is_none();
    let mut manifest = match &cli.config {
        Some(path) => manifest::load(path)?,
        None => one_tenant(cli)?,
    };
    if let Some(group) = &cli.group {
        manifest
            .only_group(group)
            .map_err(|why| ConfigError(format!("--group: {why}")))?;
    }
    let admin = cli.admin.or(manifest.admin);
    let control = control_endpoint(cli, &manifest)?;
    let control_tcp = control.as_ref().and_then(|c| match c.addr {
        model::ControlAddr::Tcp(addr) => Some(addr),
        model::ControlAddr::Unix(_) => None,
    });
    // The manifest's parser refuses a grant to its own admin address;
    // this also covers the command line's endpoints, and the control one.
    let endpoints = [("admin", admin), ("control", control_tcp)];
    for tenant in &manifest.tenants {
        for &addr in &tenant.connect {
            for (what, endpoint) in endpoints {
                let Some(endpoint) = endpoint.filter(|e| model::reaches(*e, addr)) else {
                    continue;
                };
                let why = format!(
                    "{addr} is the host's {what} endpoint ({endpoint}): no tenant may connect to it"
                );
                return Err(if single {
                    UsageError(format!("--connect: {why}")).into()
                } else {
                    ConfigError(format!("tenant '{}': connect: {why}", tenant.name)).into()
                });
            }
        }
    }
    Ok(Resolved {
        manifest,
        single,
        admin,
        control,
    })
}

/// What every tenant is started with: the host's listeners for its
/// addresses, in manifest order (port 0 replaced by the port picked).
type Listeners = Vec<Vec<Arc<std::net::TcpListener>>>;

/// Opens the host's listeners for every tenant address: the host listens
/// on them itself, from now until the tenant goes (see
/// crate::tenancy::listeners).
fn open_listeners(manifest: &mut Manifest, single: bool) -> anyhow::Result<Listeners> {
    let mut all = Vec::with_capacity(manifest.tenants.len());
    for tenant in &mut manifest.tenants {
        let mut own = Vec::with_capacity(tenant.listen.len());
        for addr in &mut tenant.listen {
            let listener = match listeners::open(*addr, &tenant.listen_at) {
                Ok(listener) => listener,
                Err(e) if single => return Err(e),
                Err(e) => return Err(e.context(format!("tenant '{}'", tenant.name))),
            };
            *addr = listener.local_addr().unwrap_or(*addr);
            own.push(Arc::new(listener));
        }
        all.push(own);
    }
    Ok(all)
}

/// The control endpoint the command line or manifest asks for, checked:
/// on TCP it needs a readable, non-empty token file.
fn control_endpoint(cli: &Cli, manifest: &Manifest) -> anyhow::Result<Option<model::Control>> {
    let control_at = match (&cli.control, &manifest.control) {
        (Some(addr), _) => Some(model::Control {
            addr: addr.clone(),
            token_file: cli.control_token_file.clone(),
        }),
        (None, chosen) => chosen.clone(),
    };
    if let Some(at) = &control_at {
        match (&at.addr, &at.token_file) {
            (model::ControlAddr::Tcp(addr), None) => {
                return Err(ConfigError(format!(
                    "the control endpoint on {addr} needs a token file (--control-token-file), or listen on unix:PATH"
                ))
                .into());
            }
            // Unreadable or empty: every request would be refused.
            (_, Some(file)) => {
                admin::read_token(file)
                    .map_err(|why| ConfigError(format!("control endpoint: {why}")))?;
            }
            (model::ControlAddr::Unix(_), None) => {}
        }
    }
    Ok(control_at)
}

/// The compile cache directory: the one asked for, none with
/// `--no-cache`, else the default if it can be made.
fn cache_dir(cli: &Cli, manifest: &Manifest) -> Option<PathBuf> {
    match (
        cli.no_cache,
        cli.cache_dir.clone().or(manifest.cache_dir.clone()),
    ) {
        (true, _) => None,
        (false, Some(chosen)) => Some(chosen),
        // The default is a convenience: without a usable one, compile.
        (false, None) => default_cache_dir().filter(|dir| match std::fs::create_dir_all(dir) {
            Ok(()) => true,
            Err(e) => {
                warn!(dir = %dir.display(), "no compile cache (cannot create its directory: {e})");
                false
            }
        }),
    }
}

/// Starts the guest threads and the engine, and makes the (empty) set of
/// running tenants.
fn start_control(cli: &Cli, manifest: &Manifest) -> anyhow::Result<Arc<Control>> {
    let cache_dir = cache_dir(cli, manifest);
    // Guest instances run on their own threads, by default one per core:
    // see crate::runtime::workers.
    let threads = manifest.guest_threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    crate::runtime::workers::start(threads).context("cannot start the guest threads")?;
    let instances = control::instances_of(&manifest.tenants);
    let pooling = manifest.pooling_allocator.then(|| {
        let max_memory = manifest
            .tenants
            .iter()
            .map(|t| t.limits.max_memory)
            .max()
            .unwrap_or(0);
        // Room for every instance twice over: swaps and restarts overlap.
        (
            u32::try_from(instances * 2).unwrap_or(u32::MAX).max(2),
            max_memory,
        )
    });
    let engine = engine::new_engine(pooling).context("cannot configure wasmtime")?;
    if pooling.is_some() {
        crate::tenancy::supervisor::pooled();
    }
    let pool = pooling.map(|(_, max_memory)| (instances, max_memory));
    // Pulled components are kept beside the compiled ones, bounded alike.
    let store = cache_dir.as_ref().map(|dir| dir.join("oci"));
    let puller = crate::registry::Puller::new(
        manifest.registry.clone(),
        store.as_deref().map(|dir| (dir, manifest.cache_max_size)),
    )?;
    let loader = Loader::new(engine, cache_dir.map(|dir| (dir, manifest.cache_max_size)))?;
    let control = Control::new(loader, puller, cli.config.clone(), pool);
    control.set_group(cli.group.clone());
    control.set_host_settings(manifest);
    Ok(control)
}

/// Every tenant, ready to start: its configuration, listeners and
/// compiled component, or why its component could not be fetched from its
/// registry and whether that is worth retrying.
type Prepared = Vec<(
    TenantConfig,
    Vec<Arc<std::net::TcpListener>>,
    Result<control::Pre, (String, bool)>,
)>;

/// Compiles every tenant's component (cold, seconds per component) off the
/// async threads; `None` if a signal stopped the host meanwhile (nothing
/// serves yet, so it stops at once). A component a registry cannot give
/// does not stop a host of many tenants: that tenant starts failed.
async fn compile(
    control: &Arc<Control>,
    manifest: Manifest,
    listeners: Listeners,
    single: bool,
    signals: &mut Signals,
) -> anyhow::Result<Option<Prepared>> {
    let compile = {
        let control = control.clone();
        tokio::spawn(async move {
            // Each tenant's component is fetched and compiled in a task of
            // its own: a slow registry delays only its tenants' components.
            let loads: Vec<_> = manifest
                .tenants
                .into_iter()
                .map(|config| {
                    let control = control.clone();
                    tokio::spawn(async move {
                        // The shorthand names its guest by file, not by
                        // manifest line.
                        let at = if single {
                            ""
                        } else {
                            config.component_at.as_str()
                        };
                        let loaded = control
                            .load(&config.component, at, crate::registry::FetchPolicy::START)
                            .await;
                        (config, loaded)
                    })
                })
                .collect();
            let mut prepared = Vec::with_capacity(loads.len());
            for (load, listeners) in loads.into_iter().zip(listeners) {
                let (mut config, loaded) = load.await?;
                let pulled = matches!(config.component, ComponentSource::Oci(_));
                match loaded {
                    Ok((component, pre)) => {
                        config.component = component;
                        prepared.push((config, listeners, Ok(pre)));
                    }
                    Err(e) if pulled && !single => {
                        let retry = control::is_unavailable(&e);
                        prepared.push((config, listeners, Err((format!("{e:#}"), retry))));
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(prepared)
        })
    };
    tokio::pin!(compile);
    loop {
        tokio::select! {
            done = &mut compile => return Ok(Some(done.context("compiling the guests failed")??)),
            signal = signals.next() => match signal {
                Signal::Stop(name) => {
                    info!("received {name} while starting: stopped before serving");
                    return Ok(None);
                }
                Signal::Reload => warn!("SIGHUP while starting: ignored, the manifest is being loaded"),
            },
        }
    }
}

/// Starts the admin endpoint (read-only) and the control endpoint, where
/// asked for; no guest can reach either.
async fn serve_endpoints(
    control: &Arc<Control>,
    admin_addr: Option<std::net::SocketAddr>,
    control_at: Option<model::Control>,
) -> anyhow::Result<()> {
    let audited = Arc::new(Audited::default());
    if let Some(addr) = admin_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot serve the admin endpoint on {addr}"))?;
        let bound = listener.local_addr().unwrap_or(addr);
        crate::policy::forbid_admin(bound);
        info!(%bound, "admin: listening on {bound}");
        let (control, audited) = (control.clone(), audited.clone());
        tokio::spawn(async move {
            if let Err(e) = admin::serve(listener, control, audited).await {
                error!("admin endpoint failed: {e}");
            }
        });
    }
    if let Some(at) = control_at {
        let listener = control_listener(&at.addr)
            .await
            .with_context(|| format!("cannot serve the control endpoint on {}", at.addr))?;
        let control = control.clone();
        tokio::spawn(async move {
            if let Err(e) = admin::serve_control(listener, control, at.token_file, audited).await {
                error!("control endpoint failed: {e}");
            }
        });
    }
    Ok(())
}

/// Serves until a signal stops the host (SIGHUP reloads the manifest), or
/// until `guest` (the one-tenant shorthand's) ends.
async fn serve_until_stopped(
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
async fn stop(control: &Control, signals: &mut Signals, name: &str) -> Stopped {
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

/// The manifest equivalent of `tcphost [GUEST] --listen ADDR`: one tenant,
/// default limits, never restarted (the host ends with its guest).
fn one_tenant(cli: &Cli) -> anyhow::Result<Manifest> {
    let component = match &cli.guest {
        Some(spec) => {
            let cwd = std::env::current_dir().unwrap_or_default();
            // A file is read (and any problem with it named) when loaded.
            ComponentSource::parse(spec, &cwd)
                .map_err(|why| UsageError(format!("GUEST {spec:?}: {why}")))?
        }
        None => ComponentSource::Builtin("seed".into()),
    };
    // Named after the file, the built-in or the repository by default.
    let default_name = match &component {
        ComponentSource::File(path) => path.file_stem().map(|s| s.to_string_lossy().into_owned()),
        ComponentSource::Builtin(name) => Some(name.clone()),
        ComponentSource::Oci(reference) => {
            reference.repository.rsplit('/').next().map(str::to_owned)
        }
    };
    let name = cli
        .name
        .clone()
        .or(default_name)
        .unwrap_or_else(|| "guest".to_owned());
    model::valid_name(&name).map_err(|why| UsageError(format!("--name: {why}")))?;
    // A swap may load files beside the guest file (none for the built-in).
    let component_dirs = match &component {
        ComponentSource::File(path) => path.parent().map(PathBuf::from).into_iter().collect(),
        ComponentSource::Builtin(_) | ComponentSource::Oci(_) => Vec::new(),
    };
    Ok(Manifest {
        admin: None,
        control: None,
        component_dirs,
        cache_dir: None,
        cache_max_size: model::DEFAULT_CACHE_MAX_SIZE,
        pooling_allocator: false,
        guest_threads: None,
        registry: model::RegistrySettings::default(),
        watch: false,
        groups: [(model::DEFAULT_GROUP.to_owned(), model::Group::default())].into(),
        tenants: vec![TenantConfig {
            name,
            group: model::DEFAULT_GROUP.to_owned(),
            component,
            component_at: String::new(),
            listen_at: String::new(),
            listen: vec![cli.listen],
            env: cli.env.iter().cloned().collect::<BTreeMap<_, _>>(),
            connect: cli.connect.clone(),
            limits: Limits {
                max_memory: cli.max_memory.unwrap_or(Limits::default().max_memory),
                cpu_limit: cli.cpu_limit.unwrap_or(Limits::default().cpu_limit),
                restart: RestartPolicy::Never,
                max_connections: cli
                    .max_connections
                    .unwrap_or(Limits::default().max_connections),
                instances: cli.instances.unwrap_or(Limits::default().instances),
                ..Limits::default()
            },
        }],
    })
}

/// Raises the soft limit on open files to the hard one: every client
/// connection is a descriptor, and the usual soft limit (1024) is below a
/// single tenant's default connection cap. Warns when the tenants' caps
/// together exceed what the host may open (past it, accepts fail and back
/// off: see crate::limits::admission).
fn raise_open_file_limit(manifest: &Manifest) {
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft);
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            warn!("cannot raise the limit on open files (now {before}): {e}");
            before
        }
    };
    if limit > before {
        info!(
            before,
            limit, "raised the limit on open files from {before} to {limit}"
        );
    }
    let caps: u64 = manifest
        .tenants
        .iter()
        .map(|t| u64::from(t.limits.max_connections))
        .sum();
    if caps > limit {
        warn!(
            caps,
            limit,
            "the tenants' connection caps add up to {caps}, more than the {limit} files the host may open: past that, accepts fail and back off (raise the hard limit, e.g. LimitNOFILE= under systemd, or lower max_connections)"
        );
    }
}

/// `$XDG_CACHE_HOME/tcphost`, or `~/.cache/tcphost` (relative settings
/// are ignored, as the XDG specification says).
fn default_cache_dir() -> Option<PathBuf> {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let base =
        absolute("XDG_CACHE_HOME").or_else(|| absolute("HOME").map(|home| home.join(".cache")))?;
    Some(base.join("tcphost"))
}

/// Binds the control endpoint: on TCP, out of every guest's reach; on a
/// Unix socket, a file only the host's user may open (a stale socket file
/// from an earlier run is replaced, anything else there is an error).
async fn control_listener(addr: &model::ControlAddr) -> anyhow::Result<admin::ControlListener> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
    match addr {
        model::ControlAddr::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            let bound = listener.local_addr().unwrap_or(*addr);
            crate::policy::forbid_admin(bound);
            info!(%bound, "control: listening on {bound}");
            Ok(admin::ControlListener::Tcp(listener))
        }
        model::ControlAddr::Unix(path) => {
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                if !meta.file_type().is_socket() {
                    return Err(ConfigError(format!(
                        "{} exists and is not a socket",
                        path.display()
                    ))
                    .into());
                }
                // Another host may be serving it: never take it over.
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(UnavailableError(format!(
                        "{} is in use by another process",
                        path.display()
                    ))
                    .into());
                }
                std::fs::remove_file(path)?;
            }
            // Made in a directory only this user may enter, owner-only, then
            // moved into place: nobody can connect before it is.
            let parent = path.parent().unwrap_or(std::path::Path::new("."));
            let private = parent.join(format!(".control-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&private);
            std::fs::DirBuilder::new().mode(0o700).create(&private)?;
            let fresh = private.join("control.sock");
            let bound = tokio::net::UnixListener::bind(&fresh).and_then(|listener| {
                std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o600))?;
                std::fs::rename(&fresh, path)?;
                Ok(listener)
            });
            let _ = std::fs::remove_dir_all(&private);
            let listener = bound?;
            info!(path = %path.display(), "control: listening on unix:{}", path.display());
            Ok(admin::ControlListener::Unix(listener))
        }
    }
}

/// A signal the host acts on.
enum Signal {
    /// SIGINT or SIGTERM (named): stop.
    Stop(&'static str),
    /// SIGHUP: reload the manifest.
    Reload,
}

/// The host's signal handlers, installed when created.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            hup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop("SIGTERM"),
            _ = self.int.recv() => Signal::Stop("SIGINT"),
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}
