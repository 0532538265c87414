//! The WASI 0.2 release the host links, written once.

/// The WASI 0.2 release the host links (and whose entry points it
/// replaces); guests built against it or any older 0.2 release link to it
/// (semver-compatible linking). The `bindgen!` world in crate::wasi::p2::tcp
/// names it too (a macro wants a literal; a test keeps the two equal).
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
