//! The WASI 0.2 bindings over the host's version-independent WASI layer:
//! wasmtime-wasi's implementation, with the host's own TCP ([`tcp`],
//! [`streams`]), `poll` fast path ([`poll`]), ready sets ([`readiness`])
//! and refusals ([`refuse`]) shadowing its entry points. The version the
//! host links is written here once.

pub mod poll;
pub mod readiness;
pub mod refuse;
pub mod streams;
pub mod tcp;

use crate::wasi::view::WasiHost;
use wasmtime::component::Linker;

/// The WASI 0.2 release the host links (and whose entry points it
/// replaces); guests built against it or any older 0.2 release link to it
/// (semver-compatible linking). The `bindgen!` world in [`tcp`] names it
/// too (a macro wants a literal; a test keeps the two equal).
pub const VERSION: &str = "0.2.12";

/// Its minor version, for the import check.
pub const MINOR: u64 = 12;

/// The WASI 0.2 interfaces the host links, as `package/interface`.
pub const INTERFACES: &[&str] = &[
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

/// Links WASI 0.2 into `linker`: wasmtime-wasi's, with the host's TCP,
/// `poll`, ready sets and refusals in place of its own.
pub fn add_to_linker<T: WasiHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    linker.allow_shadowing(true);
    tcp::add_to_linker(linker)?;
    poll::add_to_linker(linker)?;
    readiness::add_to_linker(linker)?;
    refuse::add_to_linker(linker)?;
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_is_written_once_and_the_bindings_agree_with_it() {
        assert_eq!(super::VERSION, format!("0.2.{}", super::MINOR));
        let bindings = include_str!("tcp.rs");
        assert!(bindings.contains(&format!("import wasi:sockets/tcp@{};", super::VERSION)));
        assert!(bindings.contains(&format!(
            "import wasi:sockets/tcp-create-socket@{};",
            super::VERSION
        )));
    }
}
