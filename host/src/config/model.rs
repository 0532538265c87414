//! The configuration's model: what the host runs (the manifest as the rest
//! of the host sees it: tenants, their grants, groups, the host's
//! settings), independent of the TOML it is read from (the parser is
//! [`super::manifest`]). Limits are declared in [`super::limits`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use super::limits::{
    DEFAULT_LOG_BYTES_PER_SEC, DEFAULT_LOG_LINES_PER_SEC, Instances, Limits, MAX_INSTANCES,
    RestartPolicy,
};
pub use super::source::{BUILTIN_PREFIX, ComponentSource, OCI_PREFIX, OciRef};

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
pub struct ControlEndpoint {
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
    pub control: Option<ControlEndpoint>,
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
