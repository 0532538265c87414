//! The WASI 0.3 version the host links, written once: the guest-facing
//! interfaces (crate::wasi::p3) and the load-time import check
//! (crate::runtime::engine) both read it from here.

/// The WASI 0.3 release the host implements (wasmtime-wasi 48's, vendored
/// in `wit/p3/deps/`).
pub const VERSION: &str = "0.3.0";

/// The patch releases of 0.3 the host links: a guest built against 0.3.N
/// for N up to this links; a newer one is refused before it compiles.
pub const PATCH: u64 = 0;

/// The WASI 0.3 interfaces the host links, without their version (the
/// `wasi:cli/command@0.3.0` world's imports).
pub const INTERFACES: &[&str] = &[
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
    "wasi:cli/types",
    "wasi:clocks/types",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/system-clock",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:sockets/types",
    "wasi:sockets/ip-name-lookup",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_is_written_once_and_the_vendored_wit_agrees_with_it() {
        assert_eq!(super::VERSION, format!("0.3.{}", super::PATCH));
        let sockets = include_str!("../../../../wit/p3/deps/sockets.wit");
        assert!(sockets.contains(&format!("package wasi:sockets@{};", super::VERSION)));
        let bindings = include_str!("bindings.rs");
        assert!(bindings.contains(&format!(
            "world: \"wasi:sockets/imports@{}\"",
            super::VERSION
        )));
        // Every interface the host names is one the vendored WIT defines.
        let all: String = ["cli", "clocks", "filesystem", "random", "sockets"]
            .map(|p| {
                std::fs::read_to_string(format!(
                    "{}/../wit/p3/deps/{p}.wit",
                    env!("CARGO_MANIFEST_DIR")
                ))
                .unwrap()
            })
            .concat();
        for interface in super::INTERFACES {
            let name = interface.rsplit('/').next().unwrap();
            assert!(all.contains(&format!("interface {name} {{")), "{interface}");
        }
    }
}
