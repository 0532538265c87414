//! Builds every guest in `guest/src/bin/` to a wasm component and writes
//! the host's table of built-ins (`builtin:NAME` in a manifest) from what
//! was built, so a new built-in guest is one file there and nothing else:
//! `cargo run -p host` then needs no other step.

#[path = "build_guests.rs"]
mod build_guests;

use std::fmt::Write as _;
use std::path::PathBuf;

/// The built-in guest the host runs when it is given no component.
const DEFAULT: &str = "seed";

fn main() {
    let dir = build_guests::build("guest", "guest");
    let bins = PathBuf::from(env("CARGO_MANIFEST_DIR")).join("../guest/src/bin");
    let mut names: Vec<String> = std::fs::read_dir(&bins)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", bins.display()))
        .filter_map(|entry| guest_name(&entry.ok()?.path()))
        .collect();
    // The default first, then by name: the order errors and docs list them.
    names.sort_by_key(|name| (name != DEFAULT, name.clone()));
    assert!(
        names.first().is_some_and(|n| n == DEFAULT),
        "guest/src/bin/{DEFAULT}.rs, the default guest, is missing"
    );

    let mut table = String::from(
        "/// Every guest built into the host, by name (`builtin:NAME` in a\n\
         /// manifest), the default first: one per file in `guest/src/bin/`.\n\
         pub const BUILTIN_GUESTS: &[(&str, &[u8])] = &[\n",
    );
    for name in &names {
        let wasm = dir.join(format!("{name}.wasm"));
        assert!(
            wasm.is_file(),
            "the guest build did not produce {}",
            wasm.display()
        );
        writeln!(
            table,
            "    ({name:?}, include_bytes!({:?})),",
            wasm.display().to_string()
        )
        .expect("writing to a String");
    }
    table.push_str("];\n");
    // Where they are, for the integration tests to run them as files.
    println!("cargo:rustc-env=TCPHOST_GUEST_DIR={}", dir.display());
    let out = PathBuf::from(env("OUT_DIR")).join("builtin_guests.rs");
    std::fs::write(&out, table).unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build_guests.rs");
    println!("cargo:rerun-if-changed=../wit");
}

/// The binary a `src/bin/` entry is, as cargo finds them: `NAME.rs`, or a
/// directory `NAME/` with a `main.rs`.
fn guest_name(path: &std::path::Path) -> Option<String> {
    let name = path.file_stem()?.to_str()?.to_owned();
    let binary = if path.is_dir() {
        path.join("main.rs").is_file()
    } else {
        path.extension().is_some_and(|e| e == "rs")
    };
    binary.then_some(name)
}

fn env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("cargo sets {var}"))
}
