//! The WASI 0.2 bindings over the host's version-independent WASI layer:
//! wasmtime-wasi's implementation, with the host's own TCP ([`tcp`],
//! [`streams`]), `poll` fast path ([`poll`]), ready sets ([`readiness`]),
//! random bytes ([`random`]) and refusals ([`refuse`]) shadowing its entry
//! points. The version the
//! host links is written once, in [`version`].

pub mod delegated;
pub mod poll;
pub mod random;
pub mod readiness;
pub mod refuse;
pub mod streams;
pub mod tcp;
pub mod version;

use crate::wasi::view::WasiHost;
use wasmtime::component::Linker;

/// Links WASI 0.2 into `linker`: wasmtime-wasi's, with the host's TCP,
/// `poll`, ready sets and refusals in place of its own.
pub fn add_to_linker<T: WasiHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    linker.allow_shadowing(true);
    tcp::add_to_linker(linker)?;
    poll::add_to_linker(linker)?;
    readiness::add_to_linker(linker)?;
    random::add_to_linker(linker)?;
    refuse::add_to_linker(linker)?;
    linker.allow_shadowing(false);
    Ok(())
}
