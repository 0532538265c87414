//! The wasmtime engine and component loading: reading a guest file, telling
//! the operator precisely what is wrong with it, and preparing it for fast
//! instantiation.

use crate::sandbox::TenantState;
use std::path::Path;
use std::time::Duration;
use thiserror::Error;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};
use wasmtime_wasi::p2::bindings::CommandPre;

/// The default guest (the seed server from `guest/`), embedded at build time.
pub const DEFAULT_GUEST: &[u8] = include_bytes!(env!("DEFAULT_GUEST_WASM"));

/// How often running guests are made to yield to the rest of the host.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The WASI 0.2 minor version the host links; guests built against this or
/// any older 0.2 release link to it.
const WASI_MINOR: u64 = 12;

/// The WASI 0.2 interfaces the host links, as `package/interface`.
const PROVIDED: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
];

/// Why a guest component cannot be run; each says what to do about it.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file, as given.
        path: String,
        /// What the OS said.
        source: std::io::Error,
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
    /// Imports outside WASI 0.2.
    #[error(
        "{path} needs imports this host does not provide: {}; a guest may import only WASI 0.2 interfaces \
         (up to 0.2.{WASI_MINOR})",
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
        "{path} does not export wasi:cli/run: a guest must be a WASI 0.2 command \
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

/// The engine every guest runs on: components, async calls and epoch
/// interruption, so no guest can monopolise a thread.
pub fn new_engine() -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true).epoch_interruption(true);
    let engine = Engine::new(&config)?;
    start_epoch_ticker(&engine);
    Ok(engine)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is gone.
fn start_epoch_ticker(engine: &Engine) {
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
        .expect("spawning a thread at start-up");
}

/// Reads a guest component from `path`.
pub fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Compiles `bytes` (named `label` in errors), checks it against the guest
/// world and links it, ready to instantiate.
pub fn load(
    engine: &Engine,
    linker: &Linker<TenantState>,
    label: &str,
    bytes: &[u8],
) -> Result<CommandPre<TenantState>, LoadError> {
    let path = label.to_owned();
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => return Err(LoadError::CoreModule { path }),
        Some([0, b'a', b's', b'm', ..]) => {}
        _ => return Err(LoadError::NotWasm { path }),
    }
    let component = Component::new(engine, bytes).map_err(|e| LoadError::Invalid {
        path: path.clone(),
        reason: one_line(&e),
    })?;

    let ty = component.component_type();
    let missing: Vec<String> = ty
        .imports(engine)
        .filter(|(name, item)| !is_provided(name, &item.ty))
        .map(|(name, _)| name.to_owned())
        .collect();
    if !missing.is_empty() {
        return Err(LoadError::MissingImports { path, missing });
    }
    let exports_run = ty.exports(engine).any(|(name, item)| {
        name.starts_with("wasi:cli/run@0.2.")
            && matches!(&item.ty, ComponentItem::ComponentInstance(i)
                if i.exports(engine).any(|(f, _)| f == "run"))
    });
    if !exports_run {
        return Err(LoadError::NoRun { path });
    }

    let link_error = |e: wasmtime::Error| LoadError::Link {
        path: path.clone(),
        reason: one_line(&e),
    };
    let pre = linker.instantiate_pre(&component).map_err(link_error)?;
    CommandPre::new(pre).map_err(link_error)
}

/// Whether the host links an import named `name`: a WASI 0.2 interface no
/// newer than the host's.
fn is_provided(name: &str, item: &ComponentItem) -> bool {
    let Some((interface, version)) = name.split_once('@') else {
        return false;
    };
    let minor = version
        .strip_prefix("0.2.")
        .and_then(|rest| rest.split(['-', '+']).next())
        .and_then(|minor| minor.parse::<u64>().ok());
    matches!(item, ComponentItem::ComponentInstance(_))
        && PROVIDED.contains(&interface)
        && minor.is_some_and(|m| m <= WASI_MINOR)
}

/// An error chain on one line, for messages that must fit one.
pub fn one_line(e: &wasmtime::Error) -> String {
    format!("{e:#}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
