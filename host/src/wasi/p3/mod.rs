//! The WASI 0.3 bindings over the host's version-independent WASI layer:
//! wasmtime-wasi's cli, clocks, filesystem and random, with the host's
//! own `wasi:sockets` ([`sockets`], [`streams`]) over the same socket core
//! as WASI 0.2 (crate::wasi::sockets), and the filesystem's preopens
//! counted as in 0.2. The version the host links is written once, in
//! [`version`].

pub mod bindings;
pub mod sockets;
pub mod streams;
pub mod version;

use crate::wasi::view::WasiHost;
use version::VERSION;
use wasmtime::component::{Linker, Val};

/// Links WASI 0.3 into `linker` (beside WASI 0.2: a component may import
/// both, as a Rust guest built for wasm32-wasip2 does).
pub fn add_to_linker<T: WasiHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wasmtime_wasi::p3::cli::add_to_linker(linker)?;
    wasmtime_wasi::p3::clocks::add_to_linker(linker)?;
    wasmtime_wasi::p3::random::add_to_linker(linker)?;
    wasmtime_wasi::p3::filesystem::add_to_linker(linker)?;
    sockets::add_to_linker(linker)?;
    linker.allow_shadowing(true);
    linker
        .instance(&format!("wasi:filesystem/preopens@{VERSION}"))?
        .func_new("get-directories", |mut store, _ty, _params, results| {
            crate::wasi::deny::preopens(store.data_mut().wasi().tenant.account());
            results[0] = Val::List(Vec::new());
            Ok(())
        })?;
    linker.allow_shadowing(false);
    Ok(())
}
