//! The host: runs TCP servers written as WebAssembly components, each in a
//! sandbox that grants it its listen addresses and nothing else unless the
//! manifest says so. One tenant from the command line, or many from a
//! manifest, supervised side by side in one process.

use clap::Parser;
use host::cli::Cli;
use std::io::IsTerminal;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(host::wasi::stdio::LogWriter)
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
    let code = match runtime.block_on(host::app::run(cli)) {
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
