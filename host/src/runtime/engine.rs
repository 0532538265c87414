//! The wasmtime engine and the component cache: reading a guest file,
//! telling the operator precisely what is wrong with it, compiling each
//! distinct component once (and, with a cache directory, once across
//! restarts of the host), and preparing it for fast instantiation.
//!
//! About 650 lines of code (its tests follow): reading, checking,
//! compiling and caching a component are one pipeline, kept in order in
//! one file.

use crate::limits::cpu::EPOCH_TICK;
use crate::runtime::instance::InstanceState;
use crate::wasi::p2::version::{INTERFACES, MINOR};
use crate::wasi::p3::version::{INTERFACES as INTERFACES_P3, PATCH as PATCH_P3};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use thiserror::Error;
use tracing::{info, warn};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::p2::bindings::{Command, CommandPre};
use wasmtime_wasi::p3::bindings::{Command as CommandP3, CommandPre as CommandPreP3};

/// Why a guest component cannot be run; each says what to do about it.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file, as given.
        path: String,
        /// What the OS said.
        error: std::io::Error,
    },
    /// Not WebAssembly at all.
    #[error(
        "{path} is not a WebAssembly file (it does not start with the \\0asm header); pass a .wasm component"
    )]
    NotWasm {
        /// The file, as given.
        path: String,
    },
    /// A core module, which cannot import WASI 0.2 interfaces.
    #[error(
        "{path} is a core WebAssembly module, not a component: build the guest for the wasm32-wasip2 target \
         (`cargo build --target wasm32-wasip2`), or wrap a wasip1 module with `wasm-tools component new --adapt`"
    )]
    CoreModule {
        /// The file, as given.
        path: String,
    },
    /// WebAssembly that does not validate or compile.
    #[error("{path} is not a valid WebAssembly component: {reason}")]
    Invalid {
        /// The file, as given.
        path: String,
        /// The validator's or compiler's message.
        reason: String,
    },
    /// Imports outside WASI 0.2 and 0.3.
    #[error(
        "{path} needs imports this host does not provide: {}; a guest may import only WASI \
         cli, clocks, filesystem, io, random and sockets (0.2 up to 0.2.{MINOR}, 0.3 up to \
         0.3.{PATCH_P3}) and {EXTENSION}",
        missing.join(", ")
    )]
    MissingImports {
        /// The file, as given.
        path: String,
        /// Every import that cannot be satisfied.
        missing: Vec<String>,
    },
    /// No entry point.
    #[error(
        "{path} does not export wasi:cli/run: a guest must be a WASI 0.2 or 0.3 command \
         (a Rust program with `fn main` built for wasm32-wasip2 is one)"
    )]
    NoRun {
        /// The file, as given.
        path: String,
    },
    /// Linking failed for a reason the checks above did not foresee.
    #[error("{path} cannot be linked with the host: {reason}")]
    Link {
        /// The file, as given.
        path: String,
        /// wasmtime's message.
        reason: String,
    },
}

/// Linear memories one component may have with the pooling allocator.
pub const POOL_MEMORIES: u32 = 2;
/// Tables one component may have with the pooling allocator.
pub const POOL_TABLES: u32 = 8;
/// Core instances one component may have with the pooling allocator.
pub const POOL_CORE_INSTANCES: u32 = 32;

/// The engine every guest runs on: components, async calls and epoch
/// interruption, so no guest can monopolise a thread. With `pooling`,
/// instances come from a pre-reserved pool sized for `max_instances`, each
/// memory up to `max_memory` bytes.
pub fn new_engine(pooling: Option<(u32, u64)>) -> anyhow::Result<Engine> {
    let mut config = Config::new();
    // Component-model async runs WASI 0.3 guests (streams, futures,
    // waitable sets); WASI 0.2 guests never use it.
    config
        .wasm_component_model(true)
        .wasm_component_model_async(true)
        .epoch_interruption(true);
    if let Some((max_instances, max_memory)) = pooling {
        let mut pool = PoolingAllocationConfig::new();
        // Each component gets its share of the pool and no more, so one
        // component with many memories or tables cannot take every slot
        // and leave its neighbours unable to start.
        pool.total_component_instances(max_instances)
            .max_core_instances_per_component(POOL_CORE_INSTANCES)
            .total_core_instances(max_instances.saturating_mul(POOL_CORE_INSTANCES))
            .max_memories_per_component(POOL_MEMORIES)
            .total_memories(max_instances.saturating_mul(POOL_MEMORIES))
            .max_tables_per_component(POOL_TABLES)
            .total_tables(max_instances.saturating_mul(POOL_TABLES))
            .max_memory_size(usize::try_from(max_memory).unwrap_or(usize::MAX));
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    let engine = Engine::new(&config)?;
    start_epoch_ticker(&engine)
        .map_err(|e| anyhow::anyhow!("cannot start the epoch ticker thread: {e}"))?;
    Ok(engine)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is gone.
fn start_epoch_ticker(engine: &Engine) -> std::io::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map(drop)
}

/// Largest component file the host reads.
pub const MAX_COMPONENT_BYTES: u64 = 256 * 1024 * 1024;

/// Reads a guest component from `path`: a regular file (not a directory,
/// a FIFO that could block the reader, or a device such as /dev/zero) of at
/// most [`MAX_COMPONENT_BYTES`]. Opened without blocking and checked once
/// open, so a file replaced between a check and the open changes nothing.
pub fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path);
    read_open(path, file)
}

/// Reads the component at `relative` beneath the directory `dir`, as
/// [`read`] does, resolving the path inside `dir` only: a `..`, an
/// absolute symlink or any link leading out of `dir` is refused, however
/// the directories on the way change meanwhile (Linux `openat2` with
/// `RESOLVE_BENEATH`, 5.6 and later).
pub fn read_beneath(dir: &Path, relative: &Path) -> Result<Vec<u8>, LoadError> {
    use std::ffi::CString;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    let shown = dir.join(relative);
    let open = || -> std::io::Result<std::fs::File> {
        let dir = std::fs::File::open(dir)?;
        let relative = CString::new(relative.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: open_how is plain data; all-zero is its documented
        // "nothing asked" value, and every field is then set.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC) as u64;
        how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: the pointers are to live values of the sizes given.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                std::os::fd::AsRawFd::as_raw_fd(&dir),
                relative.as_ptr(),
                &raw const how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            let error = std::io::Error::last_os_error();
            return Err(match error.raw_os_error() {
                Some(libc::EXDEV) => std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "the path leads out of the directory",
                ),
                Some(libc::ENOSYS) => std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "this kernel has no openat2 (Linux 5.6 and later), needed to open a file safely beneath a directory",
                ),
                _ => error,
            });
        }
        // SAFETY: a descriptor just opened, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(std::fs::File::from(fd))
    };
    read_open(&shown, open())
}

/// The rest of [`read`] once `file` (opened from `path`) is open: checked
/// through the descriptor, read within the bound.
fn read_open(path: &Path, file: std::io::Result<std::fs::File>) -> Result<Vec<u8>, LoadError> {
    use std::io::{Error, ErrorKind, Read};
    let failed = |error| LoadError::Read {
        path: path.display().to_string(),
        error,
    };
    let file = file.map_err(failed)?;
    let metadata = file.metadata().map_err(failed)?;
    if !metadata.is_file() {
        let what = if metadata.is_dir() {
            "a directory"
        } else {
            "a FIFO, socket or device"
        };
        return Err(failed(Error::new(
            ErrorKind::InvalidInput,
            format!("not a regular file ({what})"),
        )));
    }
    let too_big = || {
        failed(Error::new(
            ErrorKind::InvalidData,
            format!("larger than the {MAX_COMPONENT_BYTES} bytes a component may have"),
        ))
    };
    if metadata.len() > MAX_COMPONENT_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    // Bounded again while reading: the file may grow meanwhile.
    file.take(MAX_COMPONENT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(failed)?;
    if bytes.len() as u64 > MAX_COMPONENT_BYTES {
        return Err(too_big());
    }
    Ok(bytes)
}

/// Compiles components, once per distinct content, and prepares them for
/// instantiation.
pub struct Loader {
    engine: Engine,
    linker: Linker<InstanceState>,
    /// Where compiled code is cached, and the most it may hold there.
    cache_dir: Option<(PathBuf, u64)>,
    /// Components in use, by content hash. Weak: a component no tenant runs
    /// any more is freed, so swapping through many versions does not keep
    /// every one in memory (the disk cache still has their compiled code).
    prepared: Mutex<HashMap<[u8; 32], std::sync::Weak<Prepared>>>,
    /// Held while a component is looked up and compiled: two loads of the
    /// same bytes at once (tenants started together) compile once and
    /// share one component, which a reload compares by identity. Compiling
    /// already uses every core (parallel compilation), so little is lost.
    compiling: Mutex<()>,
}

impl Loader {
    /// A loader for `engine`, caching compiled code in `cache_dir` if
    /// given, up to the size given with it.
    pub fn new(engine: Engine, cache_dir: Option<(PathBuf, u64)>) -> anyhow::Result<Self> {
        let linker = crate::runtime::instance::linker(&engine)?;
        if let Some((dir, _)) = &cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                crate::config::ConfigError(format!(
                    "cannot create the cache directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
        Ok(Loader {
            engine,
            linker,
            cache_dir,
            prepared: Mutex::new(HashMap::new()),
            compiling: Mutex::new(()),
        })
    }

    /// The engine components are compiled for.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Checks and compiles `bytes` (named `label` in errors) and links it,
    /// ready to instantiate. The same bytes are compiled only once.
    pub fn load(&self, label: &str, bytes: &[u8]) -> Result<Arc<Prepared>, LoadError> {
        let path = label.to_owned();
        match bytes.get(..8) {
            Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => return Err(LoadError::CoreModule { path }),
            Some([0, b'a', b's', b'm', ..]) => {}
            _ => return Err(LoadError::NotWasm { path }),
        }
        // Before compiling (minutes, for a large component): a component
        // the host cannot link is refused at once, and never cached.
        check_imports(&path, bytes)?;
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let _one_at_a_time = self.compiling.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pre) = self
            .prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
            .and_then(std::sync::Weak::upgrade)
        {
            return Ok(pre);
        }
        let component = self.compile(&path, bytes, &digest)?;
        let pre = Arc::new(prepare(&self.engine, &self.linker, &path, &component)?);
        let mut prepared = self.prepared.lock().unwrap_or_else(|p| p.into_inner());
        prepared.retain(|_, pre| pre.strong_count() > 0);
        prepared.insert(digest, Arc::downgrade(&pre));
        Ok(pre)
    }

    /// How many compiled components some tenant still holds.
    pub fn components_in_use(&self) -> usize {
        self.prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|pre| pre.strong_count() > 0)
            .count()
    }

    /// Compiles, or loads the compiled code from the cache.
    fn compile(&self, path: &str, bytes: &[u8], digest: &[u8; 32]) -> Result<Component, LoadError> {
        let cached = self
            .cache_dir
            .as_ref()
            .map(|(dir, _)| dir.join(self.cache_file_name(digest)));
        if let Some(file) = cached.as_ref().filter(|f| f.is_file()) {
            // Used now: the last to be pruned (nothing to do if it fails).
            let _ = std::fs::File::options()
                .append(true)
                .open(file)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            // SAFETY: the file was written by `Engine::precompile_component`
            // of an engine with the same settings (both are in its name),
            // into the host's own cache directory, which operators must keep
            // writable by the host alone (see docs/operators.md).
            match unsafe { Component::deserialize_file(&self.engine, file) } {
                Ok(component) => {
                    info!(guest = path, cache = %file.display(), "loaded compiled component from the cache");
                    return Ok(component);
                }
                Err(e) => {
                    warn!(cache = %file.display(), "ignoring unusable cache entry: {}", one_line(&e))
                }
            }
        }
        let started = std::time::Instant::now();
        let invalid = |e: wasmtime::Error| LoadError::Invalid {
            path: path.to_owned(),
            reason: one_line(&e),
        };
        let component = match &cached {
            Some(file) => {
                let compiled = self.engine.precompile_component(bytes).map_err(invalid)?;
                if let Err(e) = write_atomically(file, &compiled) {
                    warn!(cache = %file.display(), "cannot write the compile cache: {e}");
                }
                if let Some((dir, max)) = &self.cache_dir {
                    prune_cache(dir, *max, file);
                }
                // SAFETY: produced just now by this engine.
                unsafe { Component::deserialize(&self.engine, &compiled) }.map_err(invalid)?
            }
            None => Component::new(&self.engine, bytes).map_err(invalid)?,
        };
        info!(
            guest = path,
            ms = started.elapsed().as_millis(),
            "compiled component"
        );
        Ok(component)
    }

    /// `<sha256 of the component>-<engine settings hash>.cwasm`.
    fn cache_file_name(&self, digest: &[u8; 32]) -> String {
        let mut hasher = DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{hex}-{:016x}.cwasm", hasher.finish())
    }
}

/// Removes the cache entries of `dir` used longest ago until they hold at
/// most `max` bytes, keeping `newest` (just written) whatever its size.
/// Removing an entry a running component was loaded from is safe: its
/// mapping keeps the data until it is dropped.
fn prune_cache(dir: &Path, max: u64, newest: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((meta.modified().ok()?, meta.len(), e.path()))
        })
        .collect();
    let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
    entries.sort();
    for (_, len, path) in entries {
        if total <= max {
            break;
        }
        if path == newest {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                total -= len;
                info!(cache = %path.display(), "removed from the compile cache, past its size limit");
            }
            Err(e) => warn!(cache = %path.display(), "cannot prune the compile cache: {e}"),
        }
    }
}

/// Writes `bytes` to `file` so that readers see all of it or nothing.
fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, file)
}

/// Checks a compiled component against the guest world and links it.
fn prepare(
    engine: &Engine,
    linker: &Linker<InstanceState>,
    path: &str,
    component: &Component,
) -> Result<Prepared, LoadError> {
    let path = path.to_owned();
    let ty = component.component_type();
    let missing: Vec<String> = ty
        .imports(engine)
        .filter(|(name, item)| !is_provided(name, &item.ty))
        .map(|(name, _)| name.to_owned())
        .collect();
    if !missing.is_empty() {
        return Err(LoadError::MissingImports { path, missing });
    }
    // Which runs: a guest built for wasm32-wasip2 may export both, the
    // 0.2 one from its C library's start-up code (calling a `main` that a
    // WASI 0.3 guest does not have), so 0.3 comes first, as in wasmtime.
    let runs: Vec<bool> = ty
        .exports(engine)
        .filter_map(|(name, item)| {
            let exports_run = matches!(&item.ty, ComponentItem::ComponentInstance(i)
                if i.exports(engine).any(|(f, _)| f == "run"));
            let version = name.strip_prefix("wasi:cli/run@")?;
            exports_run.then(|| version.starts_with("0.3."))
        })
        .collect();
    if runs.is_empty() {
        return Err(LoadError::NoRun { path });
    }
    let p3 = runs.contains(&true);

    let link_error = |e: wasmtime::Error| LoadError::Link {
        path: path.clone(),
        reason: one_line(&e),
    };
    let pre = linker.instantiate_pre(component).map_err(link_error)?;
    if p3 {
        CommandPreP3::new(pre).map(Prepared::P3).map_err(link_error)
    } else {
        CommandPre::new(pre).map(Prepared::P2).map_err(link_error)
    }
}

/// A guest component, linked and ready to instantiate: a WASI 0.2 or a
/// WASI 0.3 command (by the `wasi:cli/run` it exports).
pub enum Prepared {
    /// Exports `wasi:cli/run@0.2.x`.
    P2(CommandPre<InstanceState>),
    /// Exports `wasi:cli/run@0.3.x`: runs on component-model async.
    P3(CommandPreP3<InstanceState>),
}

/// An instantiated guest, ready to run.
pub enum Instantiated {
    /// WASI 0.2.
    P2(Command),
    /// WASI 0.3.
    P3(CommandP3),
}

impl Prepared {
    /// What the component imports (its asks of the host), by name, in the
    /// component's order: what `--check` shows an operator.
    pub fn imports(&self, engine: &Engine) -> Vec<String> {
        let component = match self {
            Prepared::P2(pre) => pre.instance_pre().component(),
            Prepared::P3(pre) => pre.instance_pre().component(),
        };
        component
            .component_type()
            .imports(engine)
            .map(|(name, _)| name.to_owned())
            .collect()
    }

    /// The WASI version the guest targets, as operators write it.
    pub fn wasi_version(&self) -> &'static str {
        match self {
            Prepared::P2(_) => "0.2",
            Prepared::P3(_) => "0.3",
        }
    }

    /// Instantiates the guest in `store`.
    pub async fn instantiate(
        &self,
        store: &mut Store<InstanceState>,
    ) -> wasmtime::Result<Instantiated> {
        Ok(match self {
            Prepared::P2(pre) => Instantiated::P2(pre.instantiate_async(store).await?),
            Prepared::P3(pre) => Instantiated::P3(pre.instantiate_async(store).await?),
        })
    }
}

impl Instantiated {
    /// Runs the guest's `wasi:cli/run` to completion: a trap, or what it
    /// returned. A WASI 0.3 guest runs inside the store's concurrent event
    /// loop, which also drives its tasks and streams.
    pub async fn run(self, store: &mut Store<InstanceState>) -> wasmtime::Result<Result<(), ()>> {
        match self {
            Instantiated::P2(command) => command.wasi_cli_run().call_run(store).await,
            Instantiated::P3(command) => {
                use crate::wasi::view::WasiHost;
                // Replies the guest wrote in a turn are sent together once
                // the turn ends (crate::wasi::sockets::stream::SendBatch):
                // after every poll of the guest's event loop.
                // When the loop waits, the guest has heard of every read
                // that finished (crate::wasi::sockets::order).
                let sends = store.data_mut().wasi().sends.clone();
                let reads = store.data_mut().wasi().reads.clone();
                let mut run = std::pin::pin!(store.run_concurrent(async move |accessor| {
                    command.wasi_cli_run().call_run(accessor).await
                }));
                std::future::poll_fn(|cx| {
                    let outcome = run.as_mut().poll(cx);
                    sends.flush(cx);
                    if outcome.is_pending() {
                        reads.guest_waited();
                    }
                    outcome
                })
                .await
                .and_then(|outcome| outcome)
            }
        }
    }
}

/// Refuses a component whose top-level imports name an instance the host
/// does not provide, reading only its import sections (no compile). The
/// full check of types follows the compile, in [`prepare`]; an unreadable
/// component is left to the compiler to describe.
fn check_imports(path: &str, bytes: &[u8]) -> Result<(), LoadError> {
    use wasmparser::{ComponentTypeRef, Parser, Payload};
    let mut depth = 0usize;
    let mut missing = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else {
            return Ok(());
        };
        match payload {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(imports) if depth == 0 => {
                for import in imports {
                    let Ok(import) = import else {
                        return Ok(());
                    };
                    let name = import.name.name;
                    let instance = matches!(import.ty, ComponentTypeRef::Instance(_));
                    if !is_provided_name(name, instance) {
                        missing.push(name.to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(LoadError::MissingImports {
            path: path.to_owned(),
            missing,
        })
    }
}

/// The project's own interface the host links (see `wit/world.wit`).
const EXTENSION: &str = crate::wasi::p2::readiness::INTERFACE;

/// Whether the host links an import named `name`: a WASI 0.2 or 0.3
/// interface no newer than the host's, or the project's extension.
fn is_provided(name: &str, item: &ComponentItem) -> bool {
    is_provided_name(name, matches!(item, ComponentItem::ComponentInstance(_)))
}

/// [`is_provided`] by name, and whether the import is an instance.
fn is_provided_name(name: &str, instance: bool) -> bool {
    if name == EXTENSION {
        return instance;
    }
    let Some((interface, version)) = name.split_once('@') else {
        return false;
    };
    // A pre-release (`0.3.0-rc-...`) is not the release the host links;
    // build metadata (`+...`) does not change the version.
    let patch = |prefix: &str| {
        version
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('+').next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    let p2 = INTERFACES.contains(&interface) && patch("0.2.").is_some_and(|m| m <= MINOR);
    let p3 = INTERFACES_P3.contains(&interface)
        && patch("0.3.").is_some_and(|p| (0..=PATCH_P3).contains(&p));
    instance && (p2 || p3)
}

/// An error chain on one line, for messages that must fit one.
pub fn one_line(e: &wasmtime::Error) -> String {
    format!("{e:#}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_is_shared_while_in_use_and_freed_once_no_one_holds_it() {
        let loader = Loader::new(new_engine(None).unwrap(), None).unwrap();
        let echo = crate::runtime::builtins::builtin("echo").unwrap();
        let first = loader.load("echo", echo).unwrap();
        let again = loader.load("echo", echo).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the same bytes, compiled once");
        assert_eq!(loader.components_in_use(), 1);
        drop((first, again));
        assert_eq!(loader.components_in_use(), 0);
    }

    #[test]
    fn the_compile_cache_drops_the_entries_used_longest_ago_past_its_size() {
        let dir = std::env::temp_dir().join(format!("tcphost-prune-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let now = std::time::SystemTime::now();
        for (i, name) in ["old", "middle", "recent", "newest"].iter().enumerate() {
            let file = dir.join(format!("{name}.cwasm"));
            std::fs::write(&file, [0u8; 100]).unwrap();
            let at = now - std::time::Duration::from_secs(100 - i as u64 * 10);
            std::fs::File::options()
                .append(true)
                .open(&file)
                .unwrap()
                .set_modified(at)
                .unwrap();
        }
        std::fs::write(dir.join("other.txt"), [0u8; 1000]).unwrap();
        // The newest is kept whatever its age, and only .cwasm files count.
        prune_cache(&dir, 250, &dir.join("old.cwasm"));
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["newest.cwasm", "old.cwasm", "other.txt"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
