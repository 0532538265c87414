//! Build-script helper: builds the example servers of `guest/examples/`
//! written in other languages, each with its own language's toolchain, for
//! the integration tests (`tests/examples.rs`).
//!
//! componentize-py (from PyPI) is pinned, and componentize-qjs and
//! ComponentizeJS (from npm) are installed from the example's committed
//! lockfile (`npm ci`), both kept in the target directory's `lang-tools/`
//! and installed there on first use. The C example needs Debian's clang
//! and lld (`.ci/run` installs them): without them the build fails naming
//! the packages.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The componentize-py release the Python example is built with: it
/// embeds CPython 3.14 and targets WASI 0.2.
pub const COMPONENTIZE_PY: &str = "0.25.1";

/// `lang-tools/` in the target directory this build writes to (which
/// `CARGO_TARGET_DIR` may move): `out` is
/// `TARGET/PROFILE/build/PACKAGE-HASH/out`.
fn lang_tools(out: &Path) -> PathBuf {
    out.ancestors()
        .nth(4)
        .expect("OUT_DIR is inside the target directory")
        .join("lang-tools")
}

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
fn componentize_py(tools: &Path) -> PathBuf {
    let venv = tools.join("python");
    let tool = venv.join("bin/componentize-py");
    let installed = Command::new(&tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout).trim()
                == format!("componentize-py {COMPONENTIZE_PY}")
        });
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
    let tool = componentize_py(&lang_tools(out));
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
    assert!(
        c_packages_installed(),
        "the C example needs the Debian packages {C_PACKAGES} (apt-get install {C_PACKAGES})"
    );
    run(
        Command::new("sh")
            .arg(source.join("build.sh"))
            .arg(&wasm)
            // Inside the workspace: rustc is the pinned toolchain.
            .current_dir(&source),
        &format!("building the C example (with the Debian packages {C_PACKAGES})"),
    );
    wasm
}

/// Whether every package of [`C_PACKAGES`] is installed (`dpkg -s`).
fn c_packages_installed() -> bool {
    Command::new("dpkg")
        .arg("-s")
        .args(C_PACKAGES.split(' '))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The Debian 12 packages the C example is built with.
const C_PACKAGES: &str = "clang-22 lld-22 libclang-rt-22-dev-wasm32 wasi-libc";

/// The JavaScript componentizers (componentize-qjs, the example's, and
/// ComponentizeJS, whose known failure the tests keep in view), installed
/// into `target/lang-tools/js` with `npm ci` from the lockfile committed
/// beside the example, unless that lockfile is installed there already.
fn js_tools(tools: &Path, example: &Path) -> PathBuf {
    let prefix = tools.join("js");
    let lock = std::fs::read(example.join("package-lock.json"))
        .expect("guest/examples/js/package-lock.json");
    let installed = std::fs::read(prefix.join("package-lock.json")).is_ok_and(|l| l == lock)
        && prefix.join("node_modules/.bin/componentize-qjs").exists();
    if !installed {
        std::fs::create_dir_all(&prefix).expect("a directory for the JavaScript tools");
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(example.join(file), prefix.join(file))
                .unwrap_or_else(|e| panic!("copying guest/examples/js/{file}: {e}"));
        }
        run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&prefix),
            "installing componentize-qjs and ComponentizeJS with npm ci (needs node and npm)",
        );
    }
    prefix.join("node_modules/.bin")
}

/// Builds `guest/examples/js/server.js` twice for the standard-only world:
/// with componentize-qjs into `out/js-seed.wasm` (the example), and with
/// ComponentizeJS into `out/js-seed-componentize-js.wasm` (its known
/// failure). Returns both.
pub fn js(workspace: &Path, out: &Path) -> (PathBuf, PathBuf) {
    let example = workspace.join("guest/examples/js");
    let server = example.join("server.js");
    for file in ["server.js", "package-lock.json"] {
        println!("cargo:rerun-if-changed={}", example.join(file).display());
    }
    let bin = js_tools(&lang_tools(out), &example);
    let wit = workspace.join("wit");
    let qjs = out.join("js-seed.wasm");
    run(
        Command::new(bin.join("componentize-qjs"))
            .arg("--wit")
            .arg(&wit)
            .args(["--world", "tcp-server-portable", "--sync", "--js"])
            .arg(&server)
            .arg("-o")
            .arg(&qjs),
        "building the JavaScript example with componentize-qjs",
    );
    let spidermonkey = out.join("js-seed-componentize-js.wasm");
    run(
        Command::new(bin.join("componentize-js"))
            .arg(&server)
            .arg("-w")
            .arg(&wit)
            .args([
                "-n",
                "tcp-server-portable",
                "-d",
                "http",
                "fetch-event",
                "-o",
            ])
            .arg(&spidermonkey),
        "building the JavaScript example with ComponentizeJS",
    );
    (qjs, spidermonkey)
}
