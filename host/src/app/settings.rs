//! What the command line asks the host to run, resolved: the manifest
//! file or the one-tenant shorthand's equivalent, `--group`, the admin and
//! control endpoints (and that no grant reaches them), the cache
//! directory.

use super::exit::{ConfigError, UsageError};
use crate::cli::Cli;
use crate::config::manifest;
use crate::config::model::{self, ComponentSource, Limits, Manifest, RestartPolicy, TenantConfig};
use crate::ops::admin;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tracing::warn;

/// What the command line asks the host to run, checked whole: what a
/// start and `--check` both begin with.
pub(super) struct Resolved {
    /// The manifest file, or the one-tenant shorthand's equivalent,
    /// narrowed to `--group`.
    pub(super) manifest: Manifest,
    /// The one-tenant shorthand: the host ends with its guest.
    pub(super) single: bool,
    /// The admin endpoint (the command line's over the manifest's).
    pub(super) admin: Option<std::net::SocketAddr>,
    /// The control endpoint, its token file checked.
    pub(super) control: Option<model::ControlEndpoint>,
}

/// Reads the manifest (or builds the one-tenant one), applies `--group`,
/// settles the endpoints and checks no tenant is granted a connection to
/// one of them.
pub(super) fn resolve(cli: &Cli) -> anyhow::Result<Resolved> {
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

/// The control endpoint the command line or manifest asks for, checked:
/// on TCP it needs a readable, non-empty token file.
pub(super) fn control_endpoint(
    cli: &Cli,
    manifest: &Manifest,
) -> anyhow::Result<Option<model::ControlEndpoint>> {
    let control_at = match (&cli.control, &manifest.control) {
        (Some(addr), _) => Some(model::ControlEndpoint {
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
pub(super) fn cache_dir(cli: &Cli, manifest: &Manifest) -> Option<PathBuf> {
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

/// `$XDG_CACHE_HOME/tcphost`, or `~/.cache/tcphost` (relative settings
/// are ignored, as the XDG specification says).
pub(super) fn default_cache_dir() -> Option<PathBuf> {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let base =
        absolute("XDG_CACHE_HOME").or_else(|| absolute("HOME").map(|home| home.join(".cache")))?;
    Some(base.join("tcphost"))
}

/// The manifest equivalent of `tcphost [GUEST] --listen ADDR`: one tenant,
/// default limits, never restarted (the host ends with its guest).
pub(super) fn one_tenant(cli: &Cli) -> anyhow::Result<Manifest> {
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
