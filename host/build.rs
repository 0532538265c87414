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

/// The forms every guest is built in: the name after `@` in
/// `builtin:NAME@FORM`, the cargo arguments of its build, and its target
/// directory. The first is the default form, `builtin:NAME`.
const FORMS: &[(&str, &[&str], &str)] = &[
    // WASI 0.2 with this host's ready sets.
    ("p2", &[], "wasm-target"),
    // WASI 0.2 with standard imports only, waiting with wasi:io/poll.
    (
        "p2-portable",
        &["--no-default-features"],
        "wasm-target-portable",
    ),
    // WASI 0.3: sockets over component-model async, one task per
    // connection, standard imports only.
    (
        "p3",
        &["--no-default-features", "--features", "p3"],
        "wasm-target-p3",
    ),
];

/// The environment variable that asks for the examples in other languages
/// to be built and tested (tests/guests/build.rs builds them).
const EXAMPLES: &str = "TCPHOST_EXAMPLES";

/// What `--version` names besides the package version: the commit built
/// (`TCPHOST_COMMIT`, for builds without the repository, else git's), and
/// the wasmtime release linked (from Cargo.lock, which pins it).
fn emit_version() {
    let root = PathBuf::from(env("CARGO_MANIFEST_DIR")).join("..");
    println!("cargo:rerun-if-env-changed=TCPHOST_COMMIT");
    let commit = std::env::var("TCPHOST_COMMIT").ok().or_else(|| {
        // Rebuilt when HEAD moves (a checkout, or a commit on its branch,
        // loose or packed). Only files that exist are watched: cargo reruns
        // a build script on every build while a watched file is missing.
        let git = root.join(".git");
        let mut watched = vec![git.join("HEAD"), git.join("packed-refs")];
        if let Ok(head) = std::fs::read_to_string(git.join("HEAD"))
            && let Some(branch) = head.trim().strip_prefix("ref: ")
        {
            watched.push(git.join(branch));
        }
        for file in watched.iter().filter(|f| f.is_file()) {
            println!("cargo:rerun-if-changed={}", file.display());
        }
        let out = std::process::Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(&root)
            .output()
            .ok()
            .filter(|o| o.status.success())?;
        Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    });
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );
    let wasmtime = lock
        .split("[[package]]")
        .find(|p| p.contains("\nname = \"wasmtime\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| "unknown".into());
    println!(
        "cargo:rustc-env=TCPHOST_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".into())
    );
    println!("cargo:rustc-env=TCPHOST_WASMTIME={wasmtime}");
}

fn main() {
    // `cfg(tcphost_examples)`: the tests of the examples in other
    // languages are compiled in (tests/examples.rs).
    println!("cargo::rustc-check-cfg=cfg(tcphost_examples)");
    println!("cargo:rerun-if-env-changed={EXAMPLES}");
    if std::env::var(EXAMPLES).is_ok_and(|v| v == "1") {
        println!("cargo:rustc-cfg=tcphost_examples");
    }
    emit_version();
    let dirs: Vec<PathBuf> = FORMS
        .iter()
        .map(|(_, args, target)| build_guests::build_with("guest", "guest", args, target))
        .collect();
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

    // Each component once, as a static; the table refers to them, so the
    // default form and its `@FORM` name share the bytes.
    let mut table = String::new();
    let mut entries = Vec::new();
    for (i, name) in names.iter().enumerate() {
        for ((form, _, _), dir) in FORMS.iter().zip(&dirs) {
            let wasm = dir.join(format!("{name}.wasm"));
            let len = std::fs::metadata(&wasm)
                .unwrap_or_else(|e| {
                    panic!("the guest build did not produce {}: {e}", wasm.display())
                })
                .len();
            let item = format!("GUEST_{i}_{}", form.replace('-', "_").to_uppercase());
            writeln!(
                table,
                "static {item}: [u8; {len}] = *include_bytes!({:?});",
                wasm.display().to_string()
            )
            .expect("writing to a String");
            entries.push((format!("{name}@{form}"), item.clone()));
            if form == &FORMS[0].0 {
                entries.push((name.clone(), item));
            }
        }
    }
    // Default forms first (`seed` first of all), then the `@FORM` names.
    entries.sort_by_key(|(name, _)| name.contains('@'));
    table.push_str(
        "/// Every guest built into the host, by name (`builtin:NAME` in a\n\
         /// manifest, its default form; `builtin:NAME@FORM` for each form), the\n\
         /// default guest first: one per file in `guest/src/bin/`.\n\
         pub static BUILTIN_GUESTS: &[(&str, &[u8])] = &[\n",
    );
    for (name, item) in &entries {
        writeln!(table, "    ({name:?}, &{item}),").expect("writing to a String");
    }
    table.push_str("];\n");
    let forms: Vec<&str> = FORMS.iter().map(|(form, _, _)| *form).collect();
    writeln!(
        table,
        "/// The forms each guest is built in, the default first.\npub const FORMS: &[&str] = &{forms:?};"
    )
    .expect("writing to a String");
    // Where they are, for the integration tests to run them as files.
    println!("cargo:rustc-env=TCPHOST_GUEST_DIR={}", dirs[0].display());
    println!(
        "cargo:rustc-env=TCPHOST_PORTABLE_GUEST_DIR={}",
        dirs[1].display()
    );
    println!("cargo:rustc-env=TCPHOST_P3_GUEST_DIR={}", dirs[2].display());
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
