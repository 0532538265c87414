//! The host: runs TCP servers written as WebAssembly components, each in a
//! sandbox that grants it its listen addresses and nothing else unless the
//! manifest says so. One tenant from the command line, or many from a
//! manifest, supervised side by side in one process.

mod admin;
mod cli;
mod engine;
mod guest_log;
mod manifest;
mod policy;
mod sandbox;
mod supervisor;
mod tcp;
mod tenant;

use anyhow::{Context, bail};
use clap::Parser;
use cli::Cli;
use engine::Loader;
use manifest::{ComponentSource, Limits, Manifest, RestartPolicy, TenantConfig};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tenant::Tenant;
use tracing::{error, info};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line (plus a backtrace for traps), never a Rust backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // A guest may still be computing on a worker thread; do not wait for it.
    runtime.shutdown_background();
    code
}

/// The built-in guests, by the name `builtin:NAME` gives in a manifest.
fn builtin(name: &str) -> Option<&'static [u8]> {
    (name == "seed").then_some(engine::DEFAULT_GUEST)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Before anything can listen: a signal must never find the default
    // disposition (death by signal, non-zero status) in place.
    let stop = shutdown_signal()?;

    let single = cli.config.is_none();
    let mut manifest = match &cli.config {
        Some(path) => manifest::load(path)?,
        None => one_tenant(&cli)?,
    };
    // The host listens on every tenant address itself, from now until it
    // stops: see crate::tcp.
    let mut listeners = Vec::with_capacity(manifest.tenants.len());
    for tenant in &mut manifest.tenants {
        let mut own = Vec::with_capacity(tenant.listen.len());
        for addr in &mut tenant.listen {
            let listener = match listen(*addr) {
                Ok(listener) => listener,
                Err(e) if single => return Err(e),
                Err(e) => return Err(e.context(format!("tenant '{}'", tenant.name))),
            };
            *addr = listener.local_addr().unwrap_or(*addr);
            own.push(listener);
        }
        listeners.push(own);
    }
    let admin_addr = cli.admin.or(manifest.admin);

    let cache_dir = if cli.no_cache {
        None
    } else {
        cli.cache_dir
            .clone()
            .or(manifest.cache_dir.clone())
            .or_else(default_cache_dir)
    };
    let pooling = manifest.pooling_allocator.then(|| {
        let max_memory = manifest
            .tenants
            .iter()
            .map(|t| t.limits.max_memory)
            .max()
            .unwrap_or(0);
        // Room for every tenant twice over: restarts overlap teardown.
        (
            u32::try_from(manifest.tenants.len() * 2)
                .unwrap_or(u32::MAX)
                .max(2),
            max_memory,
        )
    });
    let engine = engine::new_engine(pooling).context("cannot configure wasmtime")?;
    let loader = Loader::new(engine, cache_dir)?;

    let mut prepared = Vec::with_capacity(manifest.tenants.len());
    for (config, listeners) in manifest.tenants.into_iter().zip(listeners) {
        let pre = load_component(&loader, &config, single)?;
        prepared.push((Arc::new(Tenant::new(config, listeners)), pre));
    }
    let tenants: Arc<Vec<Arc<Tenant>>> =
        Arc::new(prepared.iter().map(|(t, _)| t.clone()).collect());

    if let Some(addr) = admin_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot serve the admin endpoint on {addr}"))?;
        let bound = listener.local_addr().unwrap_or(addr);
        info!(%bound, "admin: listening on {bound}");
        let tenants = tenants.clone();
        tokio::spawn(async move {
            if let Err(e) = admin::serve(listener, tenants).await {
                error!("admin endpoint failed: {e}");
            }
        });
    }

    let mut supervisors = tokio::task::JoinSet::new();
    for (tenant, pre) in prepared {
        info!(tenant = tenant.name(), listen = ?tenant.config.listen, "starting tenant");
        supervisors.spawn(supervisor::supervise(loader.engine().clone(), pre, tenant));
    }
    info!(tenants = tenants.len(), "host running");

    tokio::pin!(stop);
    loop {
        tokio::select! {
            signal = &mut stop => {
                info!("received {signal}, stopping");
                return Ok(());
            }
            finished = supervisors.join_next() => match finished {
                // The one-tenant shorthand ends with its guest.
                Some(Ok(outcome)) if single => return outcome.map_err(Into::into),
                Some(Err(e)) if single => bail!("guest task failed: {e}"),
                Some(_) => {}
                // Every tenant has stopped for good: stay up for the admin
                // endpoint and the operator, until signalled.
                None => {
                    info!("no tenant is running");
                    let signal = (&mut stop).await;
                    info!("received {signal}, stopping");
                    return Ok(());
                }
            }
        }
    }
}

/// The manifest equivalent of `host [GUEST.wasm] --listen ADDR`: one tenant,
/// default limits, never restarted (the host ends with its guest).
fn one_tenant(cli: &Cli) -> anyhow::Result<Manifest> {
    let (component, default_name) = match &cli.guest {
        Some(path) => (
            ComponentSource::File(path.clone()),
            path.file_stem().map(|s| s.to_string_lossy().into_owned()),
        ),
        None => (
            ComponentSource::Builtin("seed".into()),
            Some("seed".to_owned()),
        ),
    };
    let name = cli
        .name
        .clone()
        .or(default_name)
        .unwrap_or_else(|| "guest".to_owned());
    manifest::valid_name(&name).map_err(|why| anyhow::anyhow!("--name: {why}"))?;
    Ok(Manifest {
        admin: None,
        cache_dir: None,
        pooling_allocator: false,
        tenants: vec![TenantConfig {
            name,
            component,
            component_at: String::new(),
            listen: vec![cli.listen],
            env: BTreeMap::new(),
            connect: Vec::new(),
            limits: Limits {
                restart: RestartPolicy::Never,
                ..Limits::default()
            },
        }],
    })
}

/// Reads, checks and compiles a tenant's component. Errors name the
/// manifest line of its `component` key.
fn load_component(
    loader: &Loader,
    config: &TenantConfig,
    single: bool,
) -> anyhow::Result<Arc<wasmtime_wasi::p2::bindings::CommandPre<sandbox::TenantState>>> {
    let located = |e: anyhow::Error| {
        if single {
            e
        } else {
            e.context(format!("{}: tenant.component", config.component_at))
        }
    };
    let (label, bytes): (String, std::borrow::Cow<'static, [u8]>) = match &config.component {
        ComponentSource::Builtin(name) => match builtin(name) {
            Some(bytes) => (
                if single {
                    "the built-in guest".into()
                } else {
                    format!("builtin:{name}")
                },
                bytes.into(),
            ),
            None => {
                return Err(located(anyhow::anyhow!(
                    "there is no built-in guest named {name:?} (there is: seed)"
                )));
            }
        },
        ComponentSource::File(path) => (
            path.display().to_string(),
            engine::read(path).map_err(|e| located(e.into()))?.into(),
        ),
    };
    loader.load(&label, &bytes).map_err(|e| located(e.into()))
}

/// `$XDG_CACHE_HOME/tcphost`, or `~/.cache/tcphost`.
fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("tcphost"))
}

/// Opens the host's listener for a tenant address, with a clear error if it
/// is taken or not on this machine; port 0 picks a free port.
fn listen(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tcp::host_listener(addr).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!("listen address {addr} is already in use: stop what is using it or pass another --listen")
        } else {
            anyhow::anyhow!("cannot listen on {addr}: {e}; pass an address of this machine with --listen")
        }
    })
}

/// Installs the SIGINT and SIGTERM handlers now; the future resolves on
/// either, naming it.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}
