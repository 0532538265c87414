//! Where a tenant's component comes from and how it is made ready: read
//! from a file (only beneath the allowed directories, for a swap), built
//! in, or pulled from a registry (only from the allowed ones), then
//! checked and compiled off the async threads.

use super::running::*;
use crate::config::model::ComponentSource;
use crate::registry::FetchPolicy;
use crate::runtime::builtins;
use crate::runtime::engine::{self, Loader};
use std::path::PathBuf;

/// Runs `load` (compiling, seconds for a cold component) letting the
/// runtime move the other tasks of this async thread elsewhere meanwhile.
pub(super) fn off_the_async_threads(
    load: impl FnOnce() -> anyhow::Result<Compiled>,
) -> anyhow::Result<Compiled> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(load)
        }
        _ => load(),
    }
}

/// Reads, checks and compiles a component. Errors are prefixed with `at`
/// (the manifest line of its `component` key) when given.
pub fn load_component(
    loader: &Loader,
    source: &ComponentSource,
    at: &str,
) -> anyhow::Result<Compiled> {
    let located = |e: anyhow::Error| {
        if at.is_empty() {
            e
        } else {
            e.context(format!("{at}: tenant.component"))
        }
    };
    let (label, bytes): (String, std::borrow::Cow<'static, [u8]>) = match source {
        ComponentSource::Builtin(name) => match builtins::builtin(name) {
            Some(bytes) => (source.to_string(), bytes.into()),
            None => {
                return Err(located(
                    crate::config::ConfigError(format!(
                        "there is no built-in guest named {name:?} (there are: {})",
                        builtins::builtin_names()
                    ))
                    .into(),
                ));
            }
        },
        ComponentSource::File(path) => (
            path.display().to_string(),
            engine::read(path).map_err(|e| located(e.into()))?.into(),
        ),
        ComponentSource::Oci(reference) => {
            return Err(located(anyhow::anyhow!(
                "{reference} must be pulled first (Control::load)"
            )));
        }
    };
    loader.load(&label, &bytes).map_err(|e| located(e.into()))
}

impl Control {
    /// Whether a swap request may pull `reference` (`[host] registries`).
    pub fn may_pull(&self, reference: &crate::config::source::OciRef) -> Result<(), String> {
        let settings = self.puller.settings();
        if settings.allows(reference) {
            return Ok(());
        }
        Err(if settings.allowed.is_empty() {
            format!(
                "{reference} is not in a registry swaps may pull from: [host] registries lists none"
            )
        } else {
            format!(
                "{reference} is not in a registry swaps may pull from ([host] registries: {})",
                settings.allowed.join(", ")
            )
        })
    }

    /// Reads the component file `path` for a swap asked for over the
    /// control endpoint: only a file beneath one of the `[host]
    /// component_dirs`, opened once, beneath that directory, without
    /// following any link out of it (crate::runtime::engine::read_beneath),
    /// so nothing done to the path after this call changes what is loaded:
    /// the swap loads these bytes. Built-in guests need no check; files a
    /// manifest names are the operator's own.
    pub fn read_swappable(&self, path: &std::path::Path) -> Result<Vec<u8>, String> {
        match self.read_beneath_allowed(path) {
            Some(read) => read.map_err(|e| e.to_string()),
            None => {
                let listed: Vec<String> = self
                    .component_dirs()
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect();
                Err(format!(
                    "{} is outside the directories a swap may load from ({}): [host] component_dirs lists them",
                    path.display(),
                    listed.join(", ")
                ))
            }
        }
    }

    /// The `[host] component_dirs` the host started with.
    pub(super) fn component_dirs(&self) -> Vec<PathBuf> {
        self.started_with
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|m| m.component_dirs.clone())
            .unwrap_or_default()
    }

    /// Reads `path` beneath the `[host] component_dirs` directory it names,
    /// or `None` if it names none of them.
    pub(super) fn read_beneath_allowed(
        &self,
        path: &std::path::Path,
    ) -> Option<Result<Vec<u8>, engine::LoadError>> {
        for dir in &self.component_dirs() {
            // The directory as written, or as it resolves (the path asked
            // for may name either).
            let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
            for dir in [dir, &real] {
                if let Ok(relative) = path.strip_prefix(dir) {
                    return Some(engine::read_beneath(dir, relative));
                }
            }
        }
        None
    }

    /// Reads a component file a tenant runs, again (the file watcher):
    /// beneath the `[host] component_dirs` when it is under one (where a
    /// swap over the control endpoint may have put it), else by its path
    /// (a file the manifest names, the operator's own).
    pub(super) fn reread(&self, path: &std::path::Path) -> Result<Vec<u8>, engine::LoadError> {
        self.read_beneath_allowed(path)
            .unwrap_or_else(|| engine::read(path))
    }

    /// Reads or pulls, checks and compiles (or finds compiled) the
    /// component `source`, named in errors by `at`: the source as it runs
    /// (a tag pinned to the digest it resolved to) and the component. A
    /// tag the registry cannot resolve now falls back, with `stale_ok`, to
    /// the digest it last had. On the host's async threads, it lets the
    /// runtime move their other tasks elsewhere while it compiles
    /// (seconds, for a cold component).
    pub async fn load(
        &self,
        source: &ComponentSource,
        at: &str,
        policy: FetchPolicy,
    ) -> anyhow::Result<(ComponentSource, Compiled)> {
        let ComponentSource::Oci(reference) = source else {
            let pre = off_the_async_threads(|| load_component(&self.loader, source, at))?;
            return Ok((source.clone(), pre));
        };
        let located = |e: anyhow::Error| {
            if at.is_empty() {
                e
            } else {
                e.context(format!("{at}: tenant.component"))
            }
        };
        let fetched = self
            .puller
            .fetch(reference, policy)
            .await
            .map_err(|e| located(e.into()))?;
        let label = fetched.reference.to_string();
        let pre = self.compile(&label, &fetched.bytes).map_err(located)?;
        Ok((ComponentSource::Oci(fetched.reference), pre))
    }

    /// Compiles (or finds) the component `bytes`, read already, named
    /// `label` in errors, as [`Control::load`] does.
    pub fn compile(&self, label: &str, bytes: &[u8]) -> anyhow::Result<Compiled> {
        off_the_async_threads(|| Ok(self.loader.load(label, bytes)?))
    }
}
