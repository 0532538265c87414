//! The command line: what an operator can ask of the host.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Runs a TCP server written as a WebAssembly component, in a sandbox.
///
/// The guest may bind and listen on the --listen address and accept clients
/// there; it may not bind anything else, connect out, use UDP or DNS, read
/// files or see the host's environment. Every refused attempt is logged.
#[derive(Debug, Parser)]
#[command(name = "host", version, about, long_about)]
pub struct Cli {
    /// The guest component (.wasm) to run. Without it the host runs its
    /// built-in default guest, the seed server.
    #[arg(value_name = "GUEST.wasm")]
    pub guest: Option<PathBuf>,

    /// The address the guest is granted to listen on, passed to it in
    /// LISTEN_ADDR. Port 0 picks a free port (logged at start-up).
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:9800")]
    pub listen: SocketAddr,

    /// The name the guest's log lines are tagged with [default: the file
    /// name without .wasm, or "seed" for the built-in guest].
    #[arg(long)]
    pub name: Option<String>,
}
