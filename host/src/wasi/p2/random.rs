//! `wasi:random` 0.2's byte calls, bounded and charged
//! (crate::wasi::random) in place of wasmtime-wasi's, which fill a byte at
//! a time. The linker must allow shadowing.

use super::version::VERSION;
use crate::wasi::random;
use crate::wasi::view::WasiHost;
use wasmtime::component::Linker;

/// Replaces `get-random-bytes` and `get-insecure-random-bytes`. `linker`
/// must allow shadowing.
pub fn add_to_linker<T: WasiHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    for (interface, function) in [
        ("random", "get-random-bytes"),
        ("insecure", "get-insecure-random-bytes"),
    ] {
        linker
            .instance(&format!("wasi:random/{interface}@{VERSION}"))?
            .func_wrap(function, |mut store, (len,): (u64,)| {
                let wasi = store.data_mut().wasi();
                Ok((random::exactly(
                    &wasi.host_work,
                    wasi.tenant.account(),
                    len,
                )?,))
            })?;
    }
    Ok(())
}
