//! The tenant manifest: a TOML file that lists every tenant the host runs,
//! with its component, grants and limits, plus host-wide defaults.
//!
//! Parsing is strict: an unknown key, a duplicate name, two tenants on one
//! address, a limit that does not parse are all errors that name the file,
//! the line and the key, and nothing starts. `host/tenants.example.toml` is
//! the commented reference.

use serde::Deserialize;
use serde::de::{self, Deserializer};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;
use toml::Spanned;

pub use super::source::{BUILTIN_PREFIX, ComponentSource, OCI_PREFIX, OciRef};

/// A manifest that cannot be used.
#[derive(Debug, Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read {file}: {error}")]
    Read {
        /// The manifest, as given.
        file: String,
        /// What the OS said.
        error: std::io::Error,
    },
    /// Something at a known place in the file is wrong.
    #[error("{file}:{line}: {key}: {message}")]
    At {
        /// The manifest, as given.
        file: String,
        /// 1-based line.
        line: usize,
        /// The key (with its table) at fault.
        key: String,
        /// What is wrong and, where useful, what is expected.
        message: String,
    },
}

/// What happens when a tenant's guest stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Leave it stopped.
    Never,
    /// Restart after a trap, an error or a non-zero exit, not after a clean exit.
    OnFailure,
    /// Restart whenever it stops.
    Always,
}

/// Resource limits and restart behaviour; every field is optional so the
/// `[limits]` table and each tenant's `limits` can override only some.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default, deserialize_with = "memory")]
    max_memory: Option<u64>,
    #[serde(default, deserialize_with = "at_least_one")]
    max_connections: Option<u32>,
    max_connections_per_peer: Option<u32>,
    #[serde(default, deserialize_with = "at_least_one")]
    max_outbound_connections: Option<u32>,
    #[serde(default, deserialize_with = "at_least_a_millisecond")]
    cpu_limit: Option<Duration>,
    restart: Option<RestartPolicy>,
    #[serde(default, deserialize_with = "duration")]
    restart_backoff: Option<Duration>,
    #[serde(default, deserialize_with = "at_least_a_millisecond")]
    restart_backoff_max: Option<Duration>,
    crash_loop_limit: Option<u32>,
    #[serde(default, deserialize_with = "at_least_a_millisecond")]
    crash_loop_window: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    drain_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    idle_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "size")]
    max_bytes_in: Option<u64>,
    #[serde(default, deserialize_with = "size")]
    max_bytes_out: Option<u64>,
    log_lines_per_sec: Option<u32>,
    #[serde(default, deserialize_with = "size")]
    log_bytes_per_sec: Option<u64>,
    #[serde(default, deserialize_with = "instances")]
    instances: Option<Instances>,
}

impl RawLimits {
    /// `self` where set, else `fallback`.
    fn or(self, fallback: &Limits) -> Limits {
        Limits {
            max_memory: self.max_memory.unwrap_or(fallback.max_memory),
            max_connections: self.max_connections.unwrap_or(fallback.max_connections),
            // Zero switches a host-wide default off for one tenant.
            max_connections_per_peer: self
                .max_connections_per_peer
                .or(fallback.max_connections_per_peer)
                .filter(|&n| n > 0),
            max_outbound_connections: self
                .max_outbound_connections
                .unwrap_or(fallback.max_outbound_connections),
            cpu_limit: self.cpu_limit.unwrap_or(fallback.cpu_limit),
            restart: self.restart.unwrap_or(fallback.restart),
            restart_backoff: self.restart_backoff.unwrap_or(fallback.restart_backoff),
            restart_backoff_max: self
                .restart_backoff_max
                .unwrap_or(fallback.restart_backoff_max),
            crash_loop_limit: self.crash_loop_limit.unwrap_or(fallback.crash_loop_limit),
            crash_loop_window: self.crash_loop_window.unwrap_or(fallback.crash_loop_window),
            drain_timeout: self.drain_timeout.unwrap_or(fallback.drain_timeout),
            // Zero switches a host-wide default off for one tenant.
            idle_timeout: self
                .idle_timeout
                .or(fallback.idle_timeout)
                .filter(|d| !d.is_zero()),
            max_bytes_in: self
                .max_bytes_in
                .or(fallback.max_bytes_in)
                .filter(|&n| n > 0),
            max_bytes_out: self
                .max_bytes_out
                .or(fallback.max_bytes_out)
                .filter(|&n| n > 0),
            // Zero switches a limit off for one tenant.
            log_lines_per_sec: self
                .log_lines_per_sec
                .or(fallback.log_lines_per_sec)
                .filter(|&n| n > 0),
            log_bytes_per_sec: self
                .log_bytes_per_sec
                .or(fallback.log_bytes_per_sec)
                .filter(|&n| n > 0),
            instances: self.instances.unwrap_or(fallback.instances),
        }
    }
}

/// A tenant's effective limits and restart behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest linear memory, in bytes.
    pub max_memory: u64,
    /// Most client connections open at once; past it clients are reset.
    pub max_connections: u32,
    /// Most client connections open at once from one IP address; past it
    /// that address's new clients are reset. `None`: no such limit.
    pub max_connections_per_peer: Option<u32>,
    /// Most outbound connections (under a connect grant) open or being
    /// opened at once; past it `start-connect` fails with
    /// `new-socket-limit`.
    pub max_outbound_connections: u32,
    /// Longest a guest may compute without returning to the host.
    pub cpu_limit: Duration,
    /// What to do when the guest stops.
    pub restart: RestartPolicy,
    /// First restart delay; doubled after each restart in a row.
    pub restart_backoff: Duration,
    /// Largest restart delay.
    pub restart_backoff_max: Duration,
    /// Restarts allowed within `crash_loop_window` before the tenant is
    /// marked failed.
    pub crash_loop_limit: u32,
    /// The window `crash_loop_limit` counts in.
    pub crash_loop_window: Duration,
    /// After a live swap, or when the host is stopping, how long a guest
    /// version may keep serving the connections it has before they are
    /// closed and it is dropped.
    pub drain_timeout: Duration,
    /// A client connection with no byte in either direction for this long
    /// is closed by the host; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Bytes one client connection may send to the guest before the host
    /// closes it; `None`: unlimited.
    pub max_bytes_in: Option<u64>,
    /// Bytes the guest may send on one client connection before the host
    /// closes it; `None`: unlimited.
    pub max_bytes_out: Option<u64>,
    /// Lines of the guest's output logged per second; the rest are counted
    /// and left out. `None`: unlimited.
    pub log_lines_per_sec: Option<u32>,
    /// Bytes of the guest's output logged per second (as written to the
    /// log, control characters escaped); lines past it are counted and
    /// left out. `None`: unlimited.
    pub log_bytes_per_sec: Option<u64>,
    /// How many instances of the component serve the tenant's addresses
    /// at once, each in its own store under these limits.
    pub instances: Instances,
}

/// Lines of guest output a tenant may log per second by default.
pub const DEFAULT_LOG_LINES_PER_SEC: u32 = 100;

/// Bytes of guest output a tenant may log per second by default.
pub const DEFAULT_LOG_BYTES_PER_SEC: u64 = 32 * 1024;

/// How many instances of a tenant's component run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instances {
    /// This many (from 1 to [`MAX_INSTANCES`]).
    Fixed(u32),
    /// One per guest thread (`"auto"`).
    Auto,
}

/// The most instances one tenant may run at once.
pub const MAX_INSTANCES: u32 = 256;

impl Instances {
    /// How many, on a host with `guest_threads` guest threads.
    pub fn resolve(self, guest_threads: usize) -> u32 {
        match self {
            Instances::Fixed(n) => n,
            Instances::Auto => u32::try_from(guest_threads.max(1))
                .unwrap_or(MAX_INSTANCES)
                .min(MAX_INSTANCES),
        }
    }
}

impl std::fmt::Display for Instances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Instances::Fixed(n) => write!(f, "{n}"),
            Instances::Auto => f.write_str("auto"),
        }
    }
}

impl std::str::FromStr for Instances {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(Instances::Auto);
        }
        match s.parse::<u32>() {
            Ok(n) if (1..=MAX_INSTANCES).contains(&n) => Ok(Instances::Fixed(n)),
            _ => Err(format!(
                "{s:?} is neither \"auto\" nor a count from 1 to {MAX_INSTANCES}"
            )),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_memory: 128 << 20,
            max_connections: 1024,
            max_connections_per_peer: None,
            max_outbound_connections: 64,
            cpu_limit: Duration::from_millis(500),
            restart: RestartPolicy::OnFailure,
            restart_backoff: Duration::from_millis(100),
            restart_backoff_max: Duration::from_secs(10),
            crash_loop_limit: 5,
            crash_loop_window: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(30),
            idle_timeout: None,
            max_bytes_in: None,
            max_bytes_out: None,
            // Finite by default: whatever a guest prints, one tenant adds at
            // most about 2.8 GB a day to the host's log.
            log_lines_per_sec: Some(DEFAULT_LOG_LINES_PER_SEC),
            log_bytes_per_sec: Some(DEFAULT_LOG_BYTES_PER_SEC),
            // One: a guest that keeps state in its memory (a key-value
            // store, say) must not silently become several stores.
            instances: Instances::Fixed(1),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    admin: Option<Spanned<SocketAddr>>,
    control: Option<Spanned<String>>,
    control_token_file: Option<Spanned<String>>,
    component_dirs: Option<Vec<String>>,
    cache_dir: Option<Spanned<String>>,
    #[serde(default, deserialize_with = "size")]
    cache_max_size: Option<u64>,
    #[serde(default)]
    pooling_allocator: bool,
    guest_threads: Option<Spanned<usize>>,
    registries: Option<Vec<Spanned<String>>>,
    insecure_registries: Option<Vec<Spanned<String>>>,
    registry_ca_file: Option<String>,
    registry_credentials: Option<String>,
    #[serde(default, deserialize_with = "size")]
    max_component_size: Option<u64>,
    #[serde(default, deserialize_with = "at_least_a_millisecond")]
    registry_timeout: Option<Duration>,
    #[serde(default)]
    watch: bool,
}

/// The group of tenants that do not name one.
pub const DEFAULT_GROUP: &str = "default";

/// The most replicas a group may ask for.
pub const MAX_REPLICAS: u32 = 1000;

/// A group of tenants placed and scaled together (`[group.NAME]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// How many hosts (pods) run it.
    pub replicas: u32,
}

impl Default for Group {
    fn default() -> Self {
        Group { replicas: 2 }
    }
}

/// Whether `name` can name a group: it becomes part of Kubernetes object
/// names, so a DNS label of at most 40 characters.
pub fn valid_group(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a group name (up to 40 lowercase letters, digits and inner dashes)"
        ))
    }
}

impl Manifest {
    /// Keeps only the tenants of `group` (a host run with `--group`).
    pub fn only_group(&mut self, group: &str) -> Result<(), String> {
        if !self.groups.contains_key(group) {
            let known: Vec<&str> = self.groups.keys().map(String::as_str).collect();
            return Err(format!(
                "the manifest has no group {group:?} (it has: {})",
                known.join(", ")
            ));
        }
        self.tenants.retain(|t| t.group == group);
        Ok(())
    }
}

/// How components are pulled from OCI registries (the `[host]` keys
/// `registries`, `insecure_registries`, `registry_ca_file`,
/// `registry_credentials`, `max_component_size`, `registry_timeout`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySettings {
    /// Where a swap request may pull from: `REGISTRY` (any repository) or
    /// `REGISTRY/REPOSITORY` (that repository and those beneath it). The
    /// manifest's own references are the operator's and always allowed.
    pub allowed: Vec<String>,
    /// Registries reached over plain HTTP besides loopback ones (TLS is
    /// the default everywhere else).
    pub insecure: Vec<String>,
    /// PEM certificates trusted besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// A Docker `config.json` with credentials (on Kubernetes, a mounted
    /// `kubernetes.io/dockerconfigjson` Secret's `.dockerconfigjson`);
    /// `None`: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json` if
    /// there is one, else anonymous.
    pub credentials: Option<PathBuf>,
    /// The largest component a pull accepts, checked while it streams.
    pub max_component_size: u64,
    /// Each registry request's deadline (a stalled registry is given up on
    /// after it, and the request retried).
    pub timeout: Duration,
}

/// The largest component pulled by default: room for the Python example
/// (21 MB) three times over.
pub const DEFAULT_MAX_COMPONENT_SIZE: u64 = 64 << 20;

/// A registry request's default deadline.
pub const DEFAULT_REGISTRY_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings {
            allowed: Vec::new(),
            insecure: Vec::new(),
            ca_file: None,
            credentials: None,
            max_component_size: DEFAULT_MAX_COMPONENT_SIZE,
            timeout: DEFAULT_REGISTRY_TIMEOUT,
        }
    }
}

impl RegistrySettings {
    /// Whether a swap request may pull `reference` (see
    /// [`RegistrySettings::allowed`]).
    pub fn allows(&self, reference: &OciRef) -> bool {
        self.allowed
            .iter()
            .any(|entry| match entry.split_once('/') {
                None => *entry == reference.registry,
                Some((registry, repository)) => {
                    registry == reference.registry
                        && (reference.repository == repository
                            || reference
                                .repository
                                .strip_prefix(repository)
                                .is_some_and(|rest| rest.starts_with('/')))
                }
            })
    }
}

/// The compile cache's default bound on disk (`[host] cache_max_size`).
pub const DEFAULT_CACHE_MAX_SIZE: u64 = 1 << 30;

/// The most guest threads a manifest may ask for.
pub const MAX_GUEST_THREADS: usize = 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    name: Spanned<String>,
    component: Spanned<String>,
    listen: Spanned<Vec<Spanned<SocketAddr>>>,
    env: Option<Spanned<BTreeMap<String, String>>>,
    connect: Option<Spanned<Vec<Spanned<SocketAddr>>>>,
    limits: Option<Spanned<RawLimits>>,
    group: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    replicas: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    host: RawHost,
    limits: Option<Spanned<RawLimits>>,
    #[serde(default, rename = "tenant")]
    tenants: Vec<RawTenant>,
    #[serde(default, rename = "group")]
    groups: BTreeMap<String, Spanned<RawGroup>>,
}

/// One tenant, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantConfig {
    /// Unique name: log tag, admin key, the guest's only argument.
    pub name: String,
    /// The group it is placed and scaled with ([`DEFAULT_GROUP`] unless
    /// named): a host told to run one group (`--group`) runs only its
    /// tenants, and each group is a Deployment of its own.
    pub group: String,
    /// The guest.
    pub component: ComponentSource,
    /// `file:line` of the `component` key, for load errors.
    pub component_at: String,
    /// `file:line` of the `listen` key, for listen errors (empty for the
    /// command line's one tenant).
    pub listen_at: String,
    /// Addresses granted for listening; the first is `LISTEN_ADDR`.
    pub listen: Vec<SocketAddr>,
    /// Extra environment variables for the guest.
    pub env: BTreeMap<String, String>,
    /// Addresses the guest may connect to (none by default).
    pub connect: Vec<SocketAddr>,
    /// Effective limits.
    pub limits: Limits,
}

impl TenantConfig {
    /// Whether `other` runs the tenant the same way: equal in everything
    /// but where in the manifest it was written.
    pub fn runs_like(&self, other: &TenantConfig) -> bool {
        let placed = |c: &TenantConfig| TenantConfig {
            component_at: String::new(),
            listen_at: String::new(),
            ..c.clone()
        };
        placed(self) == placed(other)
    }
}

/// Where the control endpoint (swaps, reloads) listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlAddr {
    /// A TCP address: requests need the bearer token.
    Tcp(SocketAddr),
    /// A Unix socket, created owner-only: its permissions are the gate (a
    /// token file, if set, is required as well).
    Unix(PathBuf),
}

impl std::fmt::Display for ControlAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlAddr::Tcp(addr) => write!(f, "{addr}"),
            ControlAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl std::str::FromStr for ControlAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("unix:") {
            Some("") => {
                Err("unix: needs the socket's path, e.g. unix:/run/tcphost/control.sock".into())
            }
            Some(path) => Ok(ControlAddr::Unix(PathBuf::from(path))),
            None => s
                .parse()
                .map(ControlAddr::Tcp)
                .map_err(|_| format!("{s:?} is neither IP:PORT nor unix:PATH")),
        }
    }
}

/// The control endpoint: where, and the file holding its bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// Where it listens.
    pub addr: ControlAddr,
    /// The token file, read at each request (replace it to rotate).
    pub token_file: Option<PathBuf>,
}

/// A validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The read-only admin endpoint's address, if enabled.
    pub admin: Option<SocketAddr>,
    /// The control endpoint, if enabled.
    pub control: Option<Control>,
    /// The directories a swap may load component files from (the
    /// manifest's own by default); built-in guests are always allowed.
    pub component_dirs: Vec<PathBuf>,
    /// Where compiled components are cached, if set.
    pub cache_dir: Option<PathBuf>,
    /// The most the compile cache may hold on disk, in bytes; the entries
    /// used longest ago are removed past it.
    pub cache_max_size: u64,
    /// Whether instances come from wasmtime's pooling allocator.
    pub pooling_allocator: bool,
    /// Threads guest instances run on (see crate::runtime::workers); `None`: one
    /// per core.
    pub guest_threads: Option<usize>,
    /// How components are pulled from OCI registries.
    pub registry: RegistrySettings,
    /// Whether a change to the manifest file is applied as a reload.
    pub watch: bool,
    /// Each group's settings (`[group.NAME]`), for every group a tenant
    /// names or a table describes.
    pub groups: BTreeMap<String, Group>,
    /// Every tenant, in file order.
    pub tenants: Vec<TenantConfig>,
}

impl Manifest {
    /// The `[host]` keys whose values differ between `self` and `other`:
    /// they are read at start only.
    pub fn host_keys_changed(&self, other: &Manifest) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.admin != other.admin {
            changed.push("host.admin");
        }
        if self.control != other.control {
            changed.push("host.control");
        }
        if self.component_dirs != other.component_dirs {
            changed.push("host.component_dirs");
        }
        if self.cache_dir != other.cache_dir {
            changed.push("host.cache_dir");
        }
        if self.cache_max_size != other.cache_max_size {
            changed.push("host.cache_max_size");
        }
        if self.pooling_allocator != other.pooling_allocator {
            changed.push("host.pooling_allocator");
        }
        if self.guest_threads != other.guest_threads {
            changed.push("host.guest_threads");
        }
        if self.registry != other.registry {
            changed.push("host.registries");
        }
        if self.watch != other.watch {
            changed.push("host.watch");
        }
        changed
    }
}

/// Reads and validates the manifest at `path`.
pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|error| ManifestError::Read {
        file: path.display().to_string(),
        error,
    })?;
    parse(path, &text)
}

/// Validates manifest `text`, read from `path`.
pub fn parse(path: &Path, text: &str) -> Result<Manifest, ManifestError> {
    let doc = Doc {
        file: path.display().to_string(),
        text,
        base: path.parent().unwrap_or(Path::new(".")),
    };
    let raw: RawManifest = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        ManifestError::At {
            file: doc.file.clone(),
            line: line_of(text, span.start),
            key: key_at(text, span),
            message: e.message().trim().to_owned(),
        }
    })?;

    if let Some(threads) = &raw.host.guest_threads
        && !(1..=MAX_GUEST_THREADS).contains(threads.get_ref())
    {
        return Err(doc.at(
            threads.span(),
            "host.guest_threads",
            format!("must be from 1 to {MAX_GUEST_THREADS}"),
        ));
    }
    let defaults = match raw.limits {
        Some(limits) => doc.limits(limits, &Limits::default(), "limits")?,
        None => Limits::default(),
    };
    let admin = raw.host.admin.as_ref().map(|a| *a.get_ref());
    let mut taken = Taken::default();
    if let Some(admin) = admin {
        taken
            .addresses
            .push((admin, "the admin endpoint".to_owned()));
    }
    let mut tenants = Vec::with_capacity(raw.tenants.len());
    for tenant in raw.tenants {
        tenants.push(doc.tenant(tenant, &defaults, admin, &mut taken)?);
    }
    let registry = doc.registry_settings(&raw.host)?;
    let mut groups = BTreeMap::new();
    for (name, group) in raw.groups {
        let span = group.span();
        valid_group(&name).map_err(|why| doc.at(span.clone(), "group", why))?;
        let replicas = match group.into_inner().replicas {
            Some(n) if *n.get_ref() == 0 || *n.get_ref() > MAX_REPLICAS => {
                return Err(doc.at(
                    n.span(),
                    "group.replicas",
                    format!("must be from 1 to {MAX_REPLICAS}"),
                ));
            }
            Some(n) => n.into_inner(),
            None => Group::default().replicas,
        };
        groups.insert(name, Group { replicas });
    }
    for tenant in &tenants {
        groups.entry(tenant.group.clone()).or_default();
    }
    let control = doc.control(raw.host.control, raw.host.control_token_file, &taken)?;
    let base = doc.base;
    let component_dirs = match raw.host.component_dirs {
        Some(dirs) => dirs.iter().map(|d| absolute(&base.join(d))).collect(),
        None => vec![absolute(base)],
    };
    Ok(Manifest {
        admin,
        control,
        component_dirs,
        cache_dir: raw.host.cache_dir.map(|dir| base.join(dir.into_inner())),
        cache_max_size: raw.host.cache_max_size.unwrap_or(DEFAULT_CACHE_MAX_SIZE),
        pooling_allocator: raw.host.pooling_allocator,
        guest_threads: raw.host.guest_threads.map(Spanned::into_inner),
        registry,
        watch: raw.host.watch,
        groups,
        tenants,
    })
}

/// The manifest being parsed: where errors point.
struct Doc<'a> {
    /// Its path, as errors name it.
    file: String,
    text: &'a str,
    /// Relative paths in it are relative to this directory.
    base: &'a Path,
}

/// What earlier entries of the manifest have taken.
#[derive(Default)]
struct Taken {
    names: HashSet<String>,
    /// Listen addresses and who uses each.
    addresses: Vec<(SocketAddr, String)>,
}

impl Doc<'_> {
    /// An error at `span`, about `key`.
    fn at(&self, span: Range<usize>, key: &str, message: String) -> ManifestError {
        ManifestError::At {
            file: self.file.clone(),
            line: line_of(self.text, span.start),
            key: key.to_owned(),
            message,
        }
    }

    /// `file:line` of `span`.
    fn place(&self, span: &Range<usize>) -> String {
        format!("{}:{}", self.file, line_of(self.text, span.start))
    }

    /// Limits written at `key`, over `defaults`, checked.
    fn limits(
        &self,
        limits: Spanned<RawLimits>,
        defaults: &Limits,
        key: &str,
    ) -> Result<Limits, ManifestError> {
        let span = limits.span();
        let merged = limits.into_inner().or(defaults);
        check_limits(&merged).map_err(|(k, why)| self.at(span, &format!("{key}.{k}"), why))?;
        Ok(merged)
    }

    /// One `[[tenant]]`, checked against what the others took.
    fn tenant(
        &self,
        tenant: RawTenant,
        defaults: &Limits,
        admin: Option<SocketAddr>,
        taken: &mut Taken,
    ) -> Result<TenantConfig, ManifestError> {
        let name = tenant.name.get_ref().clone();
        if let Err(why) = valid_name(&name) {
            return Err(self.at(tenant.name.span(), "tenant.name", why));
        }
        if !taken.names.insert(name.clone()) {
            return Err(self.at(
                tenant.name.span(),
                "tenant.name",
                format!("duplicate tenant name {name:?}"),
            ));
        }
        let listen_at = self.place(&tenant.listen.span());
        let listen = self.listen(&name, tenant.listen, taken)?;
        let connect = self.connect(tenant.connect, admin)?;
        let env = self.env(tenant.env)?;
        let component_at = self.place(&tenant.component.span());
        let component = self.component(tenant.component)?;
        let limits = match tenant.limits {
            Some(limits) => self.limits(limits, defaults, "tenant.limits")?,
            None => defaults.clone(),
        };
        let group = match tenant.group {
            Some(group) => {
                valid_group(group.get_ref())
                    .map_err(|why| self.at(group.span(), "tenant.group", why))?;
                group.into_inner()
            }
            None => DEFAULT_GROUP.to_owned(),
        };
        Ok(TenantConfig {
            name,
            group,
            component,
            component_at,
            listen_at,
            listen,
            env,
            connect,
            limits,
        })
    }

    /// A tenant's listen addresses: at least one, none used before.
    fn listen(
        &self,
        name: &str,
        listen: Spanned<Vec<Spanned<SocketAddr>>>,
        taken: &mut Taken,
    ) -> Result<Vec<SocketAddr>, ManifestError> {
        let listen_span = listen.span();
        let mut all = Vec::new();
        for addr in listen.into_inner() {
            let (span, addr) = (addr.span(), addr.into_inner());
            // Port 0 asks for a free port, so it never collides.
            if addr.port() != 0 {
                if let Some((used, owner)) = taken.addresses.iter().find(|(a, _)| overlap(*a, addr))
                {
                    let what = if *used == addr {
                        format!("{addr} is already used by {owner}")
                    } else {
                        format!("{addr} overlaps {used}, already used by {owner}")
                    };
                    return Err(self.at(span, "tenant.listen", what));
                }
                taken.addresses.push((addr, format!("tenant {name:?}")));
            }
            all.push(addr);
        }
        if all.is_empty() {
            return Err(self.at(
                listen_span,
                "tenant.listen",
                "at least one address is required".into(),
            ));
        }
        Ok(all)
    }

    /// A tenant's connect grants: never the admin endpoint.
    fn connect(
        &self,
        connect: Option<Spanned<Vec<Spanned<SocketAddr>>>>,
        admin: Option<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, ManifestError> {
        let mut all = Vec::new();
        for addr in connect.map(Spanned::into_inner).unwrap_or_default() {
            let (span, addr) = (addr.span(), addr.into_inner());
            // The admin endpoint swaps and reloads tenants: no guest may
            // reach it, whatever the manifest says.
            if let Some(admin) = admin
                && reaches(admin, addr)
            {
                return Err(self.at(
                    span,
                    "tenant.connect",
                    format!(
                        "{addr} is the host's admin endpoint ({admin}): no tenant may connect to it"
                    ),
                ));
            }
            all.push(addr);
        }
        Ok(all)
    }

    /// A tenant's environment: valid names, none the host sets.
    fn env(
        &self,
        env: Option<Spanned<BTreeMap<String, String>>>,
    ) -> Result<BTreeMap<String, String>, ManifestError> {
        let env_span = env.as_ref().map_or(0..0, Spanned::span);
        let env = env.map(Spanned::into_inner).unwrap_or_default();
        for key in env.keys() {
            if key == "LISTEN_ADDR" || key == "LISTEN_ADDRS" {
                return Err(self.at(
                    env_span.clone(),
                    "tenant.env",
                    format!("{key} is set by the host"),
                ));
            }
            if key.is_empty() || key.contains(['=', '\0']) {
                return Err(self.at(
                    env_span.clone(),
                    "tenant.env",
                    format!("{key:?} is not a valid variable name"),
                ));
            }
        }
        Ok(env)
    }

    /// A tenant's component: a built-in, a file that exists, or a
    /// well-formed OCI reference.
    fn component(&self, spec: Spanned<String>) -> Result<ComponentSource, ManifestError> {
        let span = spec.span();
        let source = ComponentSource::parse(spec.get_ref(), self.base)
            .map_err(|why| self.at(span.clone(), "tenant.component", why))?;
        if let ComponentSource::File(path) = &source
            && !path.is_file()
        {
            return Err(self.at(
                span,
                "tenant.component",
                format!("{} does not exist or is not a file", path.display()),
            ));
        }
        Ok(source)
    }

    /// The `[host]` registry keys.
    fn registry_settings(&self, host: &RawHost) -> Result<RegistrySettings, ManifestError> {
        let defaults = RegistrySettings::default();
        let mut allowed = Vec::new();
        for entry in host.registries.iter().flatten() {
            let text = entry.get_ref().trim_end_matches('/');
            // An entry is a reference without tag: check it as one.
            let (registry, repository) = text.split_once('/').unwrap_or((text, "x"));
            if format!("{OCI_PREFIX}{registry}/{repository}:t")
                .parse::<OciRef>()
                .is_err()
            {
                return Err(self.at(
                    entry.span(),
                    "host.registries",
                    format!(
                        "{text:?} is not REGISTRY or REGISTRY/REPOSITORY (no oci://, tag or digest)"
                    ),
                ));
            }
            allowed.push(text.to_owned());
        }
        let mut insecure = Vec::new();
        for entry in host.insecure_registries.iter().flatten() {
            let text = entry.get_ref();
            if format!("{OCI_PREFIX}{text}/x:t").parse::<OciRef>().is_err() {
                return Err(self.at(
                    entry.span(),
                    "host.insecure_registries",
                    format!("{text:?} is not a registry host[:port]"),
                ));
            }
            insecure.push(text.clone());
        }
        Ok(RegistrySettings {
            allowed,
            insecure,
            ca_file: host
                .registry_ca_file
                .as_ref()
                .map(|f| absolute(&self.base.join(f))),
            credentials: host
                .registry_credentials
                .as_ref()
                .map(|f| absolute(&self.base.join(f))),
            max_component_size: host
                .max_component_size
                .unwrap_or(defaults.max_component_size),
            timeout: host.registry_timeout.unwrap_or(defaults.timeout),
        })
    }

    /// The control endpoint: TCP needs a token file, and an address of
    /// its own.
    fn control(
        &self,
        addr: Option<Spanned<String>>,
        token_file: Option<Spanned<String>>,
        taken: &Taken,
    ) -> Result<Option<Control>, ManifestError> {
        Ok(match (addr, token_file) {
            (None, None) => None,
            (None, Some(file)) => {
                return Err(self.at(
                    file.span(),
                    "host.control_token_file",
                    "is set, but no host.control endpoint is".into(),
                ));
            }
            (Some(addr), token_file) => {
                let span = addr.span();
                let addr: ControlAddr = addr
                    .into_inner()
                    .parse()
                    .map_err(|why| self.at(span.clone(), "host.control", why))?;
                let token_file = token_file.map(|f| self.base.join(f.into_inner()));
                if let ControlAddr::Tcp(tcp) = &addr {
                    if token_file.is_none() {
                        return Err(self.at(
                            span,
                            "host.control",
                            "a TCP control endpoint needs host.control_token_file (or use unix:PATH)"
                                .into(),
                        ));
                    }
                    if let Some((used, owner)) = taken
                        .addresses
                        .iter()
                        .find(|(a, _)| tcp.port() != 0 && overlap(*a, *tcp))
                    {
                        return Err(self.at(
                            span,
                            "host.control",
                            format!("{tcp} overlaps {used}, already used by {owner}"),
                        ));
                    }
                }
                Some(Control { addr, token_file })
            }
        })
    }
}

/// Tenant names appear in logs, metrics and URLs: keep them plain.
pub fn valid_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid name: use 1 to 64 letters, digits, '-', '_' or '.'"
        ))
    }
}

/// 1-based line of byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The key at or just before `span`, prefixed with its table, e.g.
/// `tenant.max_memory`: what an operator searches the file for.
fn key_at(text: &str, span: Range<usize>) -> String {
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let before = &text[line_start..start];
    let ident = |s: &str| -> String {
        s.trim_end()
            .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'))
            .next()
            .unwrap_or("")
            .to_owned()
    };
    let key = match before.rfind('=') {
        Some(eq) => ident(&before[..eq]),
        None => {
            let at = text[start..span.end.min(text.len())].trim_start();
            if at.starts_with('[') {
                // The error is about a whole table: name the table.
                let header = at.lines().next().unwrap_or("");
                return header
                    .trim_matches(|c| c == '[' || c == ']')
                    .trim()
                    .to_owned();
            }
            at.split(|c: char| c == '=' || c.is_whitespace())
                .find(|s| !s.is_empty())
                .unwrap_or("")
                .to_owned()
        }
    };
    let table = text[..line_start].lines().rev().find_map(|l| {
        let l = l.trim();
        l.starts_with('[')
            .then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned())
    });
    match (table, key.is_empty()) {
        (Some(table), false) if table != key => format!("{table}.{key}"),
        (Some(table), _) => table,
        (None, false) => key,
        (None, true) => "(top level)".to_owned(),
    }
}

/// Deserializes a size: bytes as an integer, or a string like "64 MiB".
fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bytes(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Bytes(n) => Ok(Some(n)),
        Raw::Text(text) => text
            .parse::<bytesize::ByteSize>()
            .map(|b| Some(b.as_u64()))
            .map_err(|_| {
                de::Error::custom(format!(
                    "{text:?} is not a size; write e.g. \"64 MiB\" or a number of bytes"
                ))
            }),
    }
}

/// Whether listening on `a` and on `b` would clash: the same port, and the
/// same address or a wildcard covering the other (`0.0.0.0` every IPv4
/// address; `[::]` every IPv6 address: the host's IPv6 listeners are
/// IPv6-only, as WASI sockets are).
fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() || a.is_ipv4() != b.is_ipv4() {
        return false;
    }
    a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified()
}

/// `path` made absolute against the working directory (an empty path is
/// the working directory itself).
fn absolute(path: &Path) -> PathBuf {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Whether connecting to `addr` reaches a listener bound to `listener` (a
/// dual-stack one: `[::]` takes IPv4 connections too).
pub fn reaches(listener: SocketAddr, addr: SocketAddr) -> bool {
    // `::ffff:127.0.0.1` is 127.0.0.1.
    let (listener, addr) = (
        SocketAddr::new(listener.ip().to_canonical(), listener.port()),
        SocketAddr::new(addr.ip().to_canonical(), addr.port()),
    );
    listener.port() == addr.port()
        && (listener.ip() == addr.ip()
            || (listener.ip().is_unspecified() && (listener.is_ipv6() || addr.is_ipv4())))
}

/// The limits that must agree with each other: the key at fault and why.
fn check_limits(limits: &Limits) -> Result<(), (&'static str, String)> {
    if limits.restart_backoff > limits.restart_backoff_max {
        return Err((
            "restart_backoff",
            format!(
                "{} is longer than restart_backoff_max ({})",
                humantime::format_duration(limits.restart_backoff),
                humantime::format_duration(limits.restart_backoff_max)
            ),
        ));
    }
    Ok(())
}

/// Deserializes a memory limit: a size of at least 1 MiB (a guest's stack
/// and data alone take more).
fn memory<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let bytes = size(d)?;
    if bytes.is_some_and(|n| n < 1024 * 1024) {
        return Err(de::Error::custom(
            "must be at least 1 MiB; write e.g. \"64 MiB\"",
        ));
    }
    Ok(bytes)
}

/// Deserializes `instances`: a count from 1 to [`MAX_INSTANCES`], or
/// `"auto"`.
fn instances<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Instances>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Count(i64),
        Word(String),
    }
    let text = match Raw::deserialize(d).map_err(|_| {
        de::Error::custom(format!(
            "must be \"auto\" or a count from 1 to {MAX_INSTANCES}"
        ))
    })? {
        Raw::Count(n) => n.to_string(),
        Raw::Word(word) => word,
    };
    text.parse().map(Some).map_err(de::Error::custom)
}

/// Deserializes a count that must not be zero.
fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match u32::deserialize(d)? {
        0 => Err(de::Error::custom("must be at least 1")),
        n => Ok(Some(n)),
    }
}

/// Deserializes a duration that must be at least a millisecond.
fn at_least_a_millisecond<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let value = duration(d)?;
    if value.is_some_and(|v| v < Duration::from_millis(1)) {
        return Err(de::Error::custom("must be at least 1ms"));
    }
    Ok(value)
}

/// Deserializes a duration written like "250ms", "2s", "1m".
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map(Some).map_err(|_| {
        de::Error::custom(format!(
            "{text:?} is not a duration; write e.g. \"250ms\", \"2s\" or \"1m\""
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Manifest, ManifestError> {
        parse(Path::new("tenants.toml"), text)
    }

    fn error(text: &str) -> String {
        parse_str(text)
            .expect_err("the manifest is invalid")
            .to_string()
    }

    const ONE: &str =
        "[[tenant]]\nname = \"a\"\ncomponent = \"builtin:seed\"\nlisten = [\"127.0.0.1:9801\"]\n";

    #[test]
    fn the_example_manifest_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tenants.example.toml");
        let manifest = load(&path).expect("the example parses");
        assert_eq!(manifest.tenants.len(), 2);
        let small = &manifest.tenants[1];
        assert_eq!(small.limits.max_memory, 16 << 20);
        assert_eq!(small.limits.max_connections, 64);
        assert_eq!(small.limits.cpu_limit, Duration::from_millis(100));
        assert_eq!(small.limits.restart, RestartPolicy::Always);
        // Not overridden: the [limits] default.
        assert_eq!(small.limits.crash_loop_limit, 5);
        assert_eq!(small.env.get("GREETING").map(String::as_str), Some("hello"));
    }

    #[test]
    fn defaults_apply_and_tenants_override_them() {
        let text = format!(
            "[limits]\nmax_connections = 7\ncpu_limit = \"2s\"\n{ONE}limits = {{ cpu_limit = \"50ms\" }}\n"
        );
        let t = &parse_str(&text).unwrap().tenants[0];
        assert_eq!(t.limits.max_connections, 7);
        assert_eq!(t.limits.cpu_limit, Duration::from_millis(50));
        assert_eq!(t.limits.max_memory, Limits::default().max_memory);
    }

    #[test]
    fn guest_threads_defaults_to_one_per_core_and_must_be_positive() {
        assert_eq!(parse_str(ONE).unwrap().guest_threads, None);
        let two = parse_str(&format!("[host]\nguest_threads = 2\n{ONE}")).unwrap();
        assert_eq!(two.guest_threads, Some(2));
        assert_eq!(
            error(&format!("[host]\nguest_threads = 0\n{ONE}")),
            "tenants.toml:2: host.guest_threads: must be from 1 to 1024"
        );
    }

    #[test]
    fn instances_default_to_one_and_take_a_count_or_auto() {
        use super::{Instances, MAX_INSTANCES};
        let instances = |text: &str| parse_str(text).unwrap().tenants[0].limits.instances;
        assert_eq!(instances(ONE), Instances::Fixed(1));
        assert_eq!(
            instances(&format!("{ONE}limits = {{ instances = 4 }}\n")),
            Instances::Fixed(4)
        );
        let auto = format!("[limits]\ninstances = \"auto\"\n{ONE}");
        assert_eq!(instances(&auto), Instances::Auto);
        assert_eq!(Instances::Auto.resolve(8), 8);
        assert_eq!(Instances::Auto.resolve(0), 1);
        assert_eq!(Instances::Auto.resolve(100_000), MAX_INSTANCES);
        assert_eq!(Instances::Fixed(3).resolve(8), 3);
        for bad in ["0", "257", "-1", "\"many\"", "1.5"] {
            let message = error(&format!("{ONE}limits = {{ instances = {bad} }}\n"));
            assert!(
                message.starts_with("tenants.toml:5: tenant.instances: ")
                    && (message.contains("\"auto\"")),
                "{bad}: {message}"
            );
        }
        assert_eq!("auto".parse(), Ok(Instances::Auto));
        assert_eq!("2".parse(), Ok(Instances::Fixed(2)));
        assert!("0".parse::<Instances>().is_err());
    }

    #[test]
    fn an_unknown_key_names_file_line_and_key() {
        let text = format!("{ONE}colour = \"blue\"\n");
        let e = error(&text);
        assert!(
            e.starts_with("tenants.toml:5: tenant.colour: unknown field `colour`"),
            "{e}"
        );
    }

    #[test]
    fn a_duplicate_name_is_an_error() {
        let text = format!("{ONE}{}", ONE.replace("9801", "9802"));
        assert_eq!(
            error(&text),
            "tenants.toml:6: tenant.name: duplicate tenant name \"a\""
        );
    }

    #[test]
    fn two_tenants_on_one_address_is_an_error() {
        let text = format!("{ONE}{}", ONE.replace("\"a\"", "\"b\""));
        assert_eq!(
            error(&text),
            "tenants.toml:8: tenant.listen: 127.0.0.1:9801 is already used by tenant \"a\""
        );
    }

    #[test]
    fn a_connect_grant_to_the_admin_endpoint_is_an_error() {
        let manifest = |connect: &str| {
            format!(
                "[host]\nadmin = \"0.0.0.0:9900\"\n\n{ONE}connect = [\"10.0.0.1:80\", \"{connect}\"]\n"
            )
        };
        let message = error(&manifest("127.0.0.1:9900"));
        assert!(
            message.starts_with("tenants.toml:8: tenant.connect: 127.0.0.1:9900 is the host's admin endpoint (0.0.0.0:9900)"),
            "{message}"
        );
        assert!(parse_str(&manifest("127.0.0.1:9901")).is_ok());
        // The same address written as IPv6 is the same address.
        assert!(
            error(&manifest("[::ffff:127.0.0.1]:9900")).contains("is the host's admin endpoint")
        );
    }

    #[test]
    fn a_wildcard_address_overlapping_another_tenants_is_an_error() {
        let b = |listen: &str| {
            format!(
                "{ONE}{}",
                ONE.replace("\"a\"", "\"b\"")
                    .replace("127.0.0.1:9801", listen)
            )
        };
        assert_eq!(
            error(&b("0.0.0.0:9801")),
            "tenants.toml:8: tenant.listen: 0.0.0.0:9801 overlaps 127.0.0.1:9801, already used by tenant \"a\""
        );
        // Another port, or IPv6 beside an IPv4 address (the host's IPv6
        // listeners are IPv6-only), does not clash.
        assert!(parse_str(&b("0.0.0.0:9802")).is_ok());
        assert!(parse_str(&b("[::1]:9801")).is_ok());
        assert!(parse_str(&b("[::]:9801")).is_ok());
    }

    #[test]
    fn limits_that_cannot_work_are_errors_naming_their_key() {
        let tenant = |limits: &str| error(&format!("{ONE}limits = {{ {limits} }}\n"));
        assert!(
            tenant("max_connections = 0")
                .starts_with("tenants.toml:5: tenant.max_connections: must be at least 1"),
            "{}",
            tenant("max_connections = 0")
        );
        assert!(tenant("max_memory = \"64 KiB\"").contains("must be at least 1 MiB"));
        assert!(tenant("cpu_limit = \"0s\"").contains("must be at least 1ms"));
        assert_eq!(
            tenant("restart_backoff = \"1m\", restart_backoff_max = \"10s\""),
            "tenants.toml:5: tenant.limits.restart_backoff: 1m is longer than restart_backoff_max (10s)"
        );
        // The host-wide table is checked too, at its own place.
        let text = format!("[limits]\nrestart_backoff = \"20s\"\n{ONE}");
        assert_eq!(
            error(&text),
            "tenants.toml:1: limits.restart_backoff: 20s is longer than restart_backoff_max (10s)"
        );
    }

    #[test]
    fn the_admin_address_cannot_be_a_tenant_address() {
        let text = format!("[host]\nadmin = \"127.0.0.1:9801\"\n{ONE}");
        assert!(error(&text).contains("127.0.0.1:9801 is already used by the admin endpoint"));
    }

    #[test]
    fn a_limit_that_does_not_parse_names_its_key() {
        let text = format!("{ONE}limits = {{ max_memory = \"12 parsecs\" }}\n");
        let e = error(&text);
        assert!(
            e.starts_with("tenants.toml:5: tenant.max_memory: \"12 parsecs\" is not a size"),
            "{e}"
        );
        let text = format!("[limits]\ncpu_limit = \"soon\"\n{ONE}");
        let e = error(&text);
        assert!(
            e.starts_with("tenants.toml:2: limits.cpu_limit: \"soon\" is not a duration"),
            "{e}"
        );
        let text = format!("[limits]\nrestart = \"sometimes\"\n{ONE}");
        assert!(
            error(&text).starts_with("tenants.toml:2: limits.restart: unknown variant `sometimes`")
        );
    }

    #[test]
    fn a_missing_component_file_is_an_error() {
        let text = ONE.replace("builtin:seed", "no/such/guest.wasm");
        // Named absolutely: relative to the manifest's directory (here the
        // working directory), whatever the host's working directory.
        let absolute = std::path::absolute("no/such/guest.wasm").unwrap();
        assert_eq!(
            error(&text),
            format!(
                "tenants.toml:3: tenant.component: {} does not exist or is not a file",
                absolute.display()
            )
        );
    }

    #[test]
    fn a_tenant_needs_a_listen_address() {
        let text = ONE.replace("[\"127.0.0.1:9801\"]", "[]");
        assert_eq!(
            error(&text),
            "tenants.toml:4: tenant.listen: at least one address is required"
        );
    }

    #[test]
    fn a_missing_key_is_an_error() {
        let e = error("[[tenant]]\nname = \"a\"\nlisten = [\"127.0.0.1:1\"]\n");
        assert!(
            e.starts_with("tenants.toml:1: tenant: missing field `component`"),
            "{e}"
        );
    }

    #[test]
    fn bad_names_and_reserved_variables_are_errors() {
        assert!(error(&ONE.replace("\"a\"", "\"a b\"")).contains("is not a valid name"));
        let text = format!("{ONE}env = {{ LISTEN_ADDR = \"x\" }}\n");
        assert!(error(&text).contains("LISTEN_ADDR is set by the host"));
    }

    #[test]
    fn malformed_toml_is_located() {
        let e = error("[[tenant]\nname = \"a\"\n");
        assert!(e.starts_with("tenants.toml:1: "), "{e}");
    }
}
