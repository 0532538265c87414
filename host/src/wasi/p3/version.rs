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
