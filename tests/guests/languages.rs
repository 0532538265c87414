//! Build-script helper: builds the example servers of `guest/examples/`
//! written in other languages, each with its own language's toolchain, for
//! the integration tests (`tests/examples.rs`).
//!
//! componentize-py is pinned and kept under the workspace's
//! `target/lang-tools/`, installed there on first use as the host's build
//! adds the `wasm32-wasip2` target. The C example needs Debian's clang and
//! lld, which a build cannot install: `.ci/run` does, and the build fails
//! saying which packages are missing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The componentize-py release the Python example is built with: it
/// embeds CPython 3.14 and targets WASI 0.2.
pub const COMPONENTIZE_PY: &str = "0.25.1";

/// Runs `cmd`, failing the build with what it printed if it fails.
fn run(cmd: &mut Command, what: &str) {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {:?}: {e}", cmd.get_program()));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The pinned componentize-py, installed into a virtual environment under
/// `target/lang-tools/python` unless it is there already.
fn componentize_py(workspace: &Path) -> PathBuf {
    let venv = workspace.join("target/lang-tools/python");
    let tool = venv.join("bin/componentize-py");
    let installed = Command::new(&tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(COMPONENTIZE_PY));
    if !installed {
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "making a Python virtual environment for componentize-py (needs python3 with venv)",
        );
        run(
            Command::new(venv.join("bin/pip")).args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                &format!("componentize-py=={COMPONENTIZE_PY}"),
            ]),
            "installing componentize-py from PyPI",
        );
    }
    tool
}

/// Builds `guest/examples/python/app.py` into `out/python-seed.wasm` for
/// the standard-only world (`tcphost:server/tcp-server-portable`).
pub fn python(workspace: &Path, out: &Path) -> PathBuf {
    let app = workspace.join("guest/examples/python/app.py");
    println!("cargo:rerun-if-changed={}", app.display());
    let tool = componentize_py(workspace);
    // Built from a copy: componentize-py leaves a __pycache__ beside the
    // source it imports.
    let source = out.join("python");
    std::fs::create_dir_all(&source).expect("a scratch directory for the Python example");
    std::fs::copy(&app, source.join("app.py")).expect("copying the Python example");
    let wasm = out.join("python-seed.wasm");
    run(
        Command::new(tool)
            .current_dir(&source)
            .arg("-d")
            .arg(workspace.join("wit"))
            .args(["-w", "tcphost:server/tcp-server-portable"])
            .args(["componentize", "app", "-o"])
            .arg(&wasm),
        "building the Python example with componentize-py",
    );
    wasm
}

/// Builds `guest/examples/c/server.c` into `out/c-seed.wasm` with the
/// example's own `build.sh` (the recipe the guide shows): clang and lld
/// from Debian, the WASI 0.2 C library of the Rust toolchain's
/// wasm32-wasip2 target.
pub fn c(workspace: &Path, out: &Path) -> PathBuf {
    let source = workspace.join("guest/examples/c");
    for file in ["server.c", "build.sh"] {
        println!("cargo:rerun-if-changed={}", source.join(file).display());
    }
    let wasm = out.join("c-seed.wasm");
    run(
        Command::new("sh")
            .arg(source.join("build.sh"))
            .arg(&wasm)
            // Inside the workspace: rustc is the pinned toolchain.
            .current_dir(&source),
        "building the C example (needs clang-22, lld-22, libclang-rt-22-dev-wasm32 and wasi-libc: \
         apt-get install clang-22 lld-22 libclang-rt-22-dev-wasm32 wasi-libc)",
    );
    wasm
}
