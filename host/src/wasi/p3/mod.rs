//! The WASI 0.3 bindings over the host's version-independent WASI layer:
//! wasmtime-wasi's cli, clocks, filesystem and random (its byte calls
//! replaced by crate::wasi::random's), with the host's own `wasi:sockets` ([`sockets`], [`streams`]) over the same socket core
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
    // Random bytes bounded and charged (crate::wasi::random), in place of
    // wasmtime-wasi's byte-at-a-time fill.
    for (interface, function) in [
        ("random", "get-random-bytes"),
        ("insecure", "get-insecure-random-bytes"),
    ] {
        linker
            .instance(&format!("wasi:random/{interface}@{VERSION}"))?
            .func_wrap(function, |mut store, (max_len,): (u64,)| {
                let wasi = store.data_mut().wasi();
                let account = wasi.tenant.account();
                Ok((crate::wasi::random::up_to(
                    &wasi.host_work,
                    account,
                    max_len,
                )?,))
            })?;
    }
    linker.allow_shadowing(false);
    Ok(())
}
