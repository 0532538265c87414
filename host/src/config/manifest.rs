//! The tenant manifest's parser: a TOML file that lists every tenant the
//! host runs, with its component, grants and limits, plus host-wide
//! defaults, read into the model ([`super::model`]).
//!
//! Parsing is strict: an unknown key, a duplicate name, two tenants on one
//! address, a limit that does not parse are all errors that name the file,
//! the line and the key, and nothing starts. `host/tenants.example.toml` is
//! the commented reference.
//!
//! Its unit tests, a third of the file, follow the parser.

use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;
use toml::Spanned;

use super::limits::LimitsTable;
use super::model::*;

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    admin: Option<Spanned<SocketAddr>>,
    control: Option<Spanned<String>>,
    control_token_file: Option<Spanned<String>>,
    component_dirs: Option<Vec<String>>,
    cache_dir: Option<Spanned<String>>,
    #[serde(default, deserialize_with = "super::values::size")]
    cache_max_size: Option<u64>,
    #[serde(default)]
    pooling_allocator: bool,
    guest_threads: Option<Spanned<usize>>,
    registries: Option<Vec<Spanned<String>>>,
    insecure_registries: Option<Vec<Spanned<String>>>,
    registry_ca_file: Option<String>,
    registry_credentials: Option<String>,
    #[serde(default, deserialize_with = "super::values::size")]
    max_component_size: Option<u64>,
    #[serde(default, deserialize_with = "super::values::at_least_a_millisecond")]
    registry_timeout: Option<Duration>,
    #[serde(default)]
    watch: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    name: Spanned<String>,
    component: Spanned<String>,
    listen: Spanned<Vec<Spanned<SocketAddr>>>,
    env: Option<Spanned<BTreeMap<String, String>>>,
    connect: Option<Spanned<Vec<Spanned<SocketAddr>>>>,
    limits: Option<Spanned<LimitsTable>>,
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
    limits: Option<Spanned<LimitsTable>>,
    #[serde(default, rename = "tenant")]
    tenants: Vec<RawTenant>,
    #[serde(default, rename = "group")]
    groups: BTreeMap<String, Spanned<RawGroup>>,
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
    let doc = ManifestText {
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
    let mut taken = Claimed::default();
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
struct ManifestText<'a> {
    /// Its path, as errors name it.
    file: String,
    text: &'a str,
    /// Relative paths in it are relative to this directory.
    base: &'a Path,
}

/// What earlier entries of the manifest have taken.
#[derive(Default)]
struct Claimed {
    names: HashSet<String>,
    /// Listen addresses and who uses each.
    addresses: Vec<(SocketAddr, String)>,
}

impl ManifestText<'_> {
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
        limits: Spanned<LimitsTable>,
        defaults: &Limits,
        key: &str,
    ) -> Result<Limits, ManifestError> {
        let span = limits.span();
        let merged = limits.into_inner().over(defaults);
        merged
            .check()
            .map_err(|(k, why)| self.at(span, &format!("{key}.{k}"), why))?;
        Ok(merged)
    }

    /// One `[[tenant]]`, checked against what the others took.
    fn tenant(
        &self,
        tenant: RawTenant,
        defaults: &Limits,
        admin: Option<SocketAddr>,
        taken: &mut Claimed,
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
        taken: &mut Claimed,
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
        taken: &Claimed,
    ) -> Result<Option<ControlEndpoint>, ManifestError> {
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
                Some(ControlEndpoint { addr, token_file })
            }
        })
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
