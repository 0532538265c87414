//! The host process: starts everything from the command line or manifest
//! (listeners, guest threads, engine, tenants, endpoints, file watch), then
//! waits for signals: SIGHUP reloads, SIGINT and SIGTERM stop gracefully.
//!
//! Its parts: `settings` resolves what to run, `control_socket` makes
//! the control endpoint's socket, `shutdown` handles signals and the
//! graceful stop, [`exit`] names the exit statuses.

mod control_socket;
pub mod exit;
mod settings;
mod shutdown;

use control_socket::control_listener;
pub use exit::{ConfigError, UnavailableError, UsageError, status_of};
use settings::{Resolved, cache_dir, resolve};
pub use shutdown::Stopped;
use shutdown::{Signal, Signals, serve_until_stopped};

use crate::cli::Cli;
use crate::config::manifest;
use crate::config::model::{self, ComponentSource, Manifest, TenantConfig};
use crate::ops::admin;
use crate::ops::metrics::Audited;
use crate::runtime::engine::{self, Loader};
use crate::tenancy::control::{self, Control};
use crate::tenancy::listeners;
use crate::tenancy::watch;
use anyhow::Context;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use tracing::{error, info, warn};

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

/// Starts the guest threads and the engine, and makes the (empty) set of
/// running tenants.
fn start_control(cli: &Cli, manifest: &Manifest) -> anyhow::Result<Arc<Control>> {
    let cache_dir = cache_dir(cli, manifest);
    // Guest instances run on their own threads, by default one per core:
    // see crate::runtime::workers.
    let threads = manifest.guest_threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let threads = crate::runtime::workers::GuestThreads::start(threads)
        .context("cannot start the guest threads")?;
    let instances = control::instances_of(&manifest.tenants, threads.count());
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
    let pool = pooling.map(|(_, max_memory)| (instances, max_memory));
    // Pulled components are kept beside the compiled ones, bounded alike.
    let store = cache_dir.as_ref().map(|dir| dir.join("oci"));
    let puller = crate::registry::Puller::new(
        manifest.registry.clone(),
        store.as_deref().map(|dir| (dir, manifest.cache_max_size)),
    )?;
    let loader = Loader::new(engine, cache_dir.map(|dir| (dir, manifest.cache_max_size)))?;
    let control = Control::new(loader, puller, cli.config.clone(), pool, threads);
    control.set_group(cli.group.clone());
    control.set_host_settings(manifest);
    Ok(control)
}

/// Every tenant, ready to start: its configuration, listeners and
/// compiled component, or why its component could not be fetched from its
/// registry and whether that is worth retrying.
type Ready = Vec<(
    TenantConfig,
    Vec<Arc<std::net::TcpListener>>,
    Result<control::Compiled, (String, bool)>,
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
) -> anyhow::Result<Option<Ready>> {
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
    control_at: Option<model::ControlEndpoint>,
) -> anyhow::Result<()> {
    let audited = Arc::new(Audited::default());
    if let Some(addr) = admin_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot serve the admin endpoint on {addr}"))?;
        let bound = listener.local_addr().unwrap_or(addr);
        control.host_endpoints().forbid(bound);
        info!(%bound, "admin: listening on {bound}");
        let (control, audited) = (control.clone(), audited.clone());
        tokio::spawn(async move {
            if let Err(e) = admin::serve(listener, control, audited).await {
                error!("admin endpoint failed: {e}");
            }
        });
    }
    if let Some(at) = control_at {
        let listener = control_listener(&at.addr, control.host_endpoints())
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
