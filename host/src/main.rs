//! The host: runs a TCP server written as a WebAssembly component, in a
//! sandbox that grants it one listen address and nothing else.

mod cli;
mod engine;
mod guest_log;
mod policy;
mod sandbox;
mod supervisor;

use anyhow::{Context, bail};
use clap::Parser;
use cli::Cli;
use policy::Grant;
use sandbox::Sandbox;
use std::io::IsTerminal;
use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;
use std::sync::Arc;
use tracing::info;

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

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Before anything can listen: a signal must never find the default
    // disposition (death by signal, non-zero status) in place.
    let stop = shutdown_signal()?;
    let (label, bytes, default_name) = match &cli.guest {
        Some(path) => (
            path.display().to_string(),
            engine::read(path)?,
            path.file_stem().map(|s| s.to_string_lossy().into_owned()),
        ),
        None => (
            "the built-in guest".to_owned(),
            engine::DEFAULT_GUEST.to_vec(),
            Some("seed".to_owned()),
        ),
    };
    let name: Arc<str> = cli
        .name
        .or(default_name)
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| "guest".to_owned())
        .into();

    let engine = engine::new_engine().context("cannot configure wasmtime")?;
    let linker = sandbox::linker(&engine)
        .map_err(anyhow::Error::from)
        .context("cannot set up the WASI linker")?;
    let pre = engine::load(&engine, &linker, &label, &bytes)?;
    let listen = check_listen_addr(cli.listen)?;

    let sandbox = Sandbox {
        name: name.clone(),
        grant: Arc::new(Grant {
            listen: vec![listen],
        }),
    };
    info!(tenant = &*name, guest = label, %listen, "starting guest");
    let guest = tokio::spawn(async move { supervisor::run_once(&engine, &pre, &sandbox).await });
    tokio::select! {
        joined = guest => match joined {
            Ok(result) => result.map_err(Into::into),
            Err(e) => bail!("guest '{name}' task failed: {e}"),
        },
        signal = stop => {
            info!("received {signal}, stopping");
            Ok(())
        }
    }
}

/// Checks that `addr` can be listened on before the guest tries, so the
/// operator gets a clear error; port 0 is resolved to a free port.
fn check_listen_addr(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    match TcpListener::bind(addr) {
        Ok(probe) => Ok(probe.local_addr().unwrap_or(addr)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            bail!(
                "listen address {addr} is already in use: stop what is using it or pass another --listen"
            )
        }
        Err(e) => {
            bail!("cannot listen on {addr}: {e}; pass an address of this machine with --listen")
        }
    }
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
