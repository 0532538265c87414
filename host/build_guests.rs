//! Build-script helper: compiles a workspace package's binaries to
//! `wasm32-wasip2` components with a nested cargo, for embedding (the host's
//! default guest) or for tests (the hostile guests).
//!
//! Shared by `host/build.rs` and `tests/guests/build.rs` through `#[path]`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target guests are built for.
pub const WASM_TARGET: &str = "wasm32-wasip2";

/// Builds every binary of `package` (in `package_dir`, relative to the
/// workspace root) for [`WASM_TARGET`] with the `guest` profile and returns
/// the directory holding the `.wasm` files.
#[allow(dead_code)] // Used by the tests' build script, not the host's.
pub fn build(package: &str, package_dir: &str) -> PathBuf {
    build_with(package, package_dir, &[], &format!("wasm-{package}"))
}

/// [`build`], with `cargo_args` added to the nested cargo's (features) and
/// its own target directory `target_name` under the outer target
/// directory's `guests/`, so builds of one package with different
/// features do not overwrite each other. Not under `OUT_DIR`: that differs
/// between `cargo clippy`, `cargo build` and `cargo test` of the same
/// package, and each would build every guest again (the guest profile
/// does not depend on the outer one).
pub fn build_with(
    package: &str,
    package_dir: &str,
    cargo_args: &[&str],
    target_name: &str,
) -> PathBuf {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let workspace = workspace_root(&manifest_dir);
    // The nested cargo needs its own target directory: the outer cargo holds
    // the lock on the workspace's one for as long as this script runs.
    // `OUT_DIR` is `TARGET/[TRIPLE/]PROFILE/build/PACKAGE-HASH/out`.
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .expect("OUT_DIR is inside the target directory")
        .join("guests")
        .join(target_name);
    // Normally the guests are built by the toolchain building the host. A
    // host built by another one (the fuzz targets need nightly, whose
    // wasm32-wasip2 standard library may not exist) names the toolchain
    // for the guests here.
    println!("cargo:rerun-if-env-changed=TCPHOST_GUEST_TOOLCHAIN");
    let toolchain = std::env::var("TCPHOST_GUEST_TOOLCHAIN")
        .ok()
        .filter(|t| !t.is_empty());
    ensure_target_installed(toolchain.as_deref());

    let mut cmd = match &toolchain {
        Some(toolchain) => {
            let mut cmd = Command::new("rustup");
            cmd.args(["run", toolchain, "cargo"]);
            for var in ["RUSTC", "RUSTDOC", "RUSTUP_TOOLCHAIN", "CARGO"] {
                cmd.env_remove(var);
            }
            cmd
        }
        None => Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())),
    };
    cmd.current_dir(&workspace)
        .args([
            "build",
            "--locked",
            "--bins",
            "--profile",
            "guest",
            "--target",
            WASM_TARGET,
            "-p",
            package,
        ])
        .args(cargo_args)
        .arg("--target-dir")
        .arg(&target_dir);
    // Flags meant for the outer, native build (or a clippy wrapper) must not
    // leak into the wasm build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the {package} guests: {e}"));
    assert!(
        status.success(),
        "building the {package} guests for {WASM_TARGET} failed (see the errors above)"
    );

    // A new guest binary is not in any dep-info file yet.
    let package_dir = workspace.join(package_dir);
    println!(
        "cargo:rerun-if-changed={}",
        package_dir.join("Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        package_dir.join("src/bin").display()
    );

    let bin_dir = target_dir.join(WASM_TARGET).join("guest");
    // Rebuild when any source the guests were compiled from changes.
    for entry in std::fs::read_dir(&bin_dir).expect("the guest build wrote its output directory") {
        let path = entry.expect("readable output directory").path();
        if path.extension().is_some_and(|e| e == "d") {
            rerun_if_deps_change(&path);
        }
    }
    bin_dir
}

/// The directory of the workspace's `Cargo.lock`, above `start`.
fn workspace_root(start: &Path) -> PathBuf {
    start
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .unwrap_or(start)
        .to_path_buf()
}

/// Emits `rerun-if-changed` for every file in a dep-info (`.d`) file.
fn rerun_if_deps_change(dep_info: &Path) {
    let text = std::fs::read_to_string(dep_info).unwrap_or_default();
    for line in text.lines() {
        let Some((_, deps)) = line.split_once(": ") else {
            continue;
        };
        // Paths are separated by spaces; spaces inside a path are escaped.
        let mut current = String::new();
        let mut chars = deps.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek() == Some(&' ') => {
                    current.push(' ');
                    chars.next();
                }
                ' ' => {
                    emit_rerun(&current);
                    current.clear();
                }
                c => current.push(c),
            }
        }
        emit_rerun(&current);
    }
}

fn emit_rerun(path: &str) {
    if !path.is_empty() {
        println!("cargo:rerun-if-changed={path}");
    }
}

/// The toolchain file lists the target, but rustup does not add targets to an
/// already installed toolchain by itself: add it once, so a fresh clone builds
/// with no extra step.
fn ensure_target_installed(toolchain: Option<&str>) {
    let mut rustc = match toolchain {
        Some(toolchain) => {
            let mut cmd = Command::new("rustup");
            cmd.args(["run", toolchain, "rustc"]).env_remove("RUSTC");
            cmd
        }
        None => Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into())),
    };
    let sysroot = rustc
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = sysroot.is_some_and(|s| s.join("lib/rustlib").join(WASM_TARGET).is_dir());
    if installed {
        return;
    }
    println!("cargo:warning=adding the {WASM_TARGET} target with rustup (needed to build guests)");
    let mut add = Command::new("rustup");
    add.args(["target", "add", WASM_TARGET]);
    if let Some(toolchain) = toolchain {
        add.args(["--toolchain", toolchain]);
    }
    let added = add.status().is_ok_and(|s| s.success());
    assert!(
        added,
        "the {WASM_TARGET} target is missing and `rustup target add {WASM_TARGET}` failed; run it by hand"
    );
}
