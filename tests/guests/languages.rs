//! Build-script helper: builds the example servers of `guest/examples/`
//! written in other languages, each with its own language's toolchain, for
//! the integration tests (`tests/examples.rs`).
//!
//! componentize-py (from PyPI), componentize-qjs and ComponentizeJS (from
//! npm) are pinned and kept in the target directory's `lang-tools/`,
//! installed there on first use as the host's build adds the
//! `wasm32-wasip2` target. The C example needs Debian's clang and lld:
//! installed with apt-get when the build runs as root on Debian (as here
//! and in CI), otherwise the build fails naming the packages.

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
    if !c_packages_installed() && may_install_debian_packages() {
        // As `rustup target add` for the host's build: on a Debian machine
        // where the build may install, the tests need nothing by hand.
        println!("cargo:warning=installing {C_PACKAGES} for the C example");
        run(
            Command::new("sh").args([
                "-c",
                &format!(
                    "apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
                     apt-get install -y -qq {C_PACKAGES}"
                ),
            ]),
            "installing the C example's compiler from Debian",
        );
    }
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

/// Whether this build runs as root on a machine with apt-get (Debian).
fn may_install_debian_packages() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    root && Path::new("/usr/bin/apt-get").exists()
}

/// The componentize-qjs release the JavaScript example is built with
/// (QuickJS, WASI 0.2).
pub const COMPONENTIZE_QJS: &str = "0.4.5";

/// The ComponentizeJS release whose known failure the tests keep in view
/// (SpiderMonkey; its issue #221).
pub const COMPONENTIZE_JS: &str = "0.23.0";

/// The pinned JavaScript componentizers, installed with npm into
/// `target/lang-tools/js` unless they are there already.
fn js_tools(tools: &Path) -> PathBuf {
    let prefix = tools.join("js");
    let packages = [
        ("componentize-qjs", COMPONENTIZE_QJS),
        ("@bytecodealliance/componentize-js", COMPONENTIZE_JS),
    ];
    let installed = packages.iter().all(|(name, version)| {
        std::fs::read_to_string(prefix.join("node_modules").join(name).join("package.json"))
            .is_ok_and(|p| p.contains(&format!("\"version\": \"{version}\"")))
    });
    if !installed {
        std::fs::create_dir_all(&prefix).expect("a directory for the JavaScript tools");
        run(
            Command::new("npm")
                .args([
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    "--prefix",
                ])
                .arg(&prefix)
                .args(
                    packages
                        .iter()
                        .map(|(name, version)| format!("{name}@{version}")),
                ),
            "installing componentize-qjs and ComponentizeJS from npm (needs node and npm)",
        );
    }
    prefix.join("node_modules/.bin")
}

/// Builds `guest/examples/js/server.js` twice for the standard-only world:
/// with componentize-qjs into `out/js-seed.wasm` (the example), and with
/// ComponentizeJS into `out/js-seed-componentize-js.wasm` (its known
/// failure). Returns both.
pub fn js(workspace: &Path, out: &Path) -> (PathBuf, PathBuf) {
    let server = workspace.join("guest/examples/js/server.js");
    println!("cargo:rerun-if-changed={}", server.display());
    let bin = js_tools(&lang_tools(out));
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
