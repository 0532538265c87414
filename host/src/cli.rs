//! The command line: what an operator can ask of the host.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

/// `--env KEY=VALUE`: a name the guest may be given, and its value.
fn env_var(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
    if key.is_empty() || key.contains('\0') || value.contains('\0') {
        return Err(format!("{key:?} is not a valid variable name"));
    }
    if key == "LISTEN_ADDR" || key == "LISTEN_ADDRS" {
        return Err(format!("{key} is set by the host"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// `--max-memory`: a size of at least 1 MiB, as in a manifest.
fn memory(text: &str) -> Result<u64, String> {
    let bytes = text
        .parse::<bytesize::ByteSize>()
        .map_err(|_| format!("{text:?} is not a size; write e.g. \"64 MiB\""))?
        .as_u64();
    if bytes < 1 << 20 {
        return Err("must be at least 1 MiB".into());
    }
    Ok(bytes)
}

/// `--cpu-limit`: a duration of at least 1 ms, as in a manifest.
fn cpu_limit(text: &str) -> Result<std::time::Duration, String> {
    let limit = humantime::parse_duration(text)
        .map_err(|_| format!("{text:?} is not a duration; write e.g. \"100ms\""))?;
    if limit < std::time::Duration::from_millis(1) {
        return Err("must be at least 1ms".into());
    }
    Ok(limit)
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// What `--version` says: the release, the commit it was built from, the
/// wasmtime it runs guests on and the WASI versions it serves.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("TCPHOST_COMMIT"),
    "; wasmtime ",
    env!("TCPHOST_WASMTIME"),
    "; WASI 0.2.12 and 0.3.0)"
);

/// Runs TCP servers written as WebAssembly components, each in a sandbox.
///
/// One tenant: `tcphost [GUEST] [--listen ADDR]`. The guest may bind and
/// listen on the --listen address and accept clients there; it may not bind
/// anything else, connect out, use UDP or DNS, read files or see the host's
/// environment. Every refused attempt is logged.
///
/// Many tenants: `tcphost --config tenants.toml`, each with its own grants,
/// limits and restart policy (see host/tenants.example.toml).
///
/// Exit status (sysexits): 0 stopped gracefully (or the one guest ended);
/// 64 the command line is wrong; 78 the configuration is (the manifest, a
/// component, a setting); 69 something the host needs is unavailable (an
/// address in use or not of this machine, a registry out of reach); 70 the
/// guest or the host failed; 130 stopped at once by a second signal.
#[derive(Debug, Parser)]
#[command(name = "tcphost", version = VERSION, about, long_about)]
pub struct Cli {
    /// The guest component to run as the one tenant: a .wasm file,
    /// builtin:NAME, or oci://REGISTRY/REPOSITORY:TAG (or @sha256:DIGEST).
    /// Without it (and without --config) the host runs its built-in
    /// default guest, the seed server.
    #[arg(value_name = "GUEST", conflicts_with = "config", long_help = guest_help())]
    pub guest: Option<String>,

    /// The address the guest is granted to listen on, passed to it in
    /// LISTEN_ADDR. Port 0 picks a free port (logged at start-up).
    #[arg(
        long,
        value_name = "IP:PORT",
        default_value = "127.0.0.1:9800",
        conflicts_with = "config"
    )]
    pub listen: SocketAddr,

    /// The name the guest's log lines are tagged with [default: the file
    /// name without .wasm, or "seed" for the built-in guest].
    #[arg(long, conflicts_with = "config")]
    pub name: Option<String>,

    /// The most clients the guest may hold open at once; past it, new
    /// clients are reset before the guest sees them [default: 1024, as
    /// for a manifest's tenant].
    #[arg(
        long,
        value_name = "N",
        conflicts_with = "config",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_connections: Option<u32>,

    /// How many instances of the guest serve its address at once, each in
    /// a sandbox of its own: a count, or "auto" for one per guest thread
    /// (one per core) [default: 1, as for a manifest's tenant: a guest
    /// that keeps state in its memory would otherwise become several
    /// stores].
    #[arg(long, value_name = "N|auto", conflicts_with = "config")]
    pub instances: Option<crate::config::model::Instances>,

    /// An environment variable for the guest, KEY=VALUE (repeat for more);
    /// LISTEN_ADDR and LISTEN_ADDRS are the host's.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", conflicts_with = "config", value_parser = env_var)]
    pub env: Vec<(String, String)>,

    /// The guest's memory limit, e.g. "64 MiB" [default: 128 MiB, as for a
    /// manifest's tenant].
    #[arg(long, value_name = "SIZE", conflicts_with = "config", value_parser = memory)]
    pub max_memory: Option<u64>,

    /// The CPU time one call into the guest may take before it is stopped,
    /// e.g. "100ms" [default: as for a manifest's tenant].
    #[arg(long, value_name = "DURATION", conflicts_with = "config", value_parser = cpu_limit)]
    pub cpu_limit: Option<std::time::Duration>,

    /// An address the guest may connect to (repeat for more; none by
    /// default: a guest connects nowhere unless granted).
    #[arg(long, value_name = "IP:PORT", conflicts_with = "config")]
    pub connect: Vec<SocketAddr>,

    /// Run every tenant listed in this TOML manifest.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Serve the read-only admin endpoint (GET /status, /healthz,
    /// /metrics) on this address; overrides the manifest's [host] admin.
    #[arg(long, value_name = "IP:PORT")]
    pub admin: Option<SocketAddr>,

    /// Serve the control endpoint (POST /tenants/NAME/swap, /reload) on
    /// this TCP address (which needs --control-token-file) or Unix socket
    /// (unix:PATH, created owner-only); overrides the manifest's [host]
    /// control.
    #[arg(long, value_name = "IP:PORT|unix:PATH")]
    pub control: Option<crate::config::model::ControlAddr>,

    /// The file holding the control endpoint's bearer token, read at each
    /// request (replace the file to rotate the token).
    #[arg(long, value_name = "FILE", requires = "control")]
    pub control_token_file: Option<PathBuf>,

    /// Cache compiled components here, so later starts skip compiling
    /// [default: the manifest's [host] cache_dir, else
    /// $XDG_CACHE_HOME/tcphost or ~/.cache/tcphost].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Compile every component afresh; read and write no cache.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,

    /// Run only the tenants of this group (`group = "NAME"` in the
    /// manifest; tenants that name none are in "default"): one Deployment
    /// per group, each scaled on its own.
    #[arg(long, value_name = "NAME", requires = "config")]
    pub group: Option<String>,

    /// Check everything the host would check before serving, and start
    /// nothing: the manifest (or the command line's one tenant), every
    /// component (read or pulled, its imports against what the host
    /// provides, compiled and linked), the limits and the pool's size.
    /// Listens on nothing, so it can run beside the host it checks for.
    /// Prints each tenant's WASI version and imports. Exit status 0, or
    /// the error's (see below).
    #[arg(long, conflicts_with = "render_kubernetes")]
    pub check: bool,

    /// Print the completions for SHELL (bash, zsh, fish, elvish,
    /// powershell) and exit, e.g. `tcphost --completions bash >
    /// /usr/share/bash-completion/completions/tcphost`.
    #[arg(long, value_name = "SHELL", exclusive = true)]
    pub completions: Option<clap_complete::Shell>,

    /// Print the man page (roff) and exit, e.g. `tcphost --man >
    /// /usr/share/man/man1/tcphost.1`.
    #[arg(long, exclusive = true)]
    pub man: bool,

    /// Print the Kubernetes objects that run the manifest (a ConfigMap
    /// holding it, and per group a Deployment, Service and NetworkPolicy)
    /// and exit; see --image.
    #[arg(long, requires = "config")]
    pub render_kubernetes: bool,

    /// The container image the rendered Deployments run.
    #[arg(long, value_name = "IMAGE", requires = "render_kubernetes", default_value = concat!("tcphost:", env!("CARGO_PKG_VERSION")))]
    pub image: String,

    /// How log lines are written: "text", or "json" (one object per line,
    /// the event's fields, tenant, instance and stream among them, at the
    /// top level: for Loki, Elasticsearch, CloudWatch). RUST_LOG filters
    /// either.
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    /// Apply every change to the manifest file as a reload does (as the
    /// manifest's [host] watch = true): edits, files renamed into place,
    /// and a Kubernetes ConfigMap's atomic update.
    #[arg(long, requires = "config")]
    pub watch: bool,
}

/// GUEST's long help: its short help and the built-in guests this build
/// has (so a new one, one file in `guest/src/bin/`, is listed with no edit).
fn guest_help() -> String {
    format!(
        "The guest component to run as the one tenant: a .wasm file, builtin:NAME, or \
         oci://REGISTRY/REPOSITORY:TAG (or @sha256:DIGEST). Without it (and without --config) \
         the host runs its built-in default guest, the seed server.\n\n\
         Built in: {}.",
        crate::runtime::builtins::builtin_names()
    )
}
