//! Shared helpers for the integration tests: start the real host binary,
//! watch its log, talk to guests over real TCP on 127.0.0.1. Every wait is
//! bounded.
#![allow(dead_code, reason = "each test binary uses a different subset")]

mod host;
mod http;
mod net;
pub mod oci;
mod tenants;

pub use host::*;
pub use http::*;
pub use net::*;
pub use tenants::*;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long any single wait in a test may take before it fails.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The host binary under test.
pub fn host_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tcphost")
}

/// The client binary under test.
pub fn client_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tcp-client")
}

thread_local! {
    /// Whether the test on this thread runs the WASI 0.3 form of the guests
    /// (see [`on_wasi_p3`]).
    static WASI_P3: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `test` with the WASI 0.3 form of every guest it names through
/// [`builtin`], [`repo_guest`] and [`hostile_guest`].
pub fn on_wasi_p3(test: fn()) {
    WASI_P3.with(|p3| p3.set(true));
    test();
}

/// Whether this test runs the WASI 0.3 guests.
pub fn wasi_p3() -> bool {
    WASI_P3.with(std::cell::Cell::get)
}

/// Runs the named tests of this file again, each with the WASI 0.3 form of
/// its guests, as `wasi_p3::NAME`: the same guarantees, proven for both.
#[macro_export]
macro_rules! also_on_wasi_p3 {
    ($($test:ident),* $(,)?) => {
        mod wasi_p3 {
            $(
                #[test]
                fn $test() {
                    $crate::common::on_wasi_p3(super::$test);
                }
            )*
        }
    };
}

thread_local! {
    /// Whether the test on this thread runs every tenant as two instances
    /// (see [`with_two_instances`]).
    static TWO_INSTANCES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `test` with every tenant of every host it starts running two
/// instances of its component (`instances = 2` in the manifest's
/// `[limits]`, or `--instances 2` for the one-tenant shorthand). The host
/// is checked, when the test ends, to have started a second instance.
pub fn with_two_instances(test: fn()) {
    TWO_INSTANCES.with(|two| two.set(true));
    test();
}

/// Whether this test runs every tenant as two instances.
pub fn two_instances() -> bool {
    TWO_INSTANCES.with(std::cell::Cell::get)
}

/// Runs the named tests of this file again, each with every tenant as two
/// instances, as `two_instances::NAME`: the same guarantees, proven for a
/// tenant spread over instances.
#[macro_export]
macro_rules! also_with_two_instances {
    ($($test:ident),* $(,)?) => {
        mod two_instances {
            $(
                #[test]
                fn $test() {
                    $crate::common::with_two_instances(super::$test);
                }
            )*
        }
    };
}

/// `builtin:NAME` in a manifest, in the form this test runs.
pub fn builtin(name: &str) -> String {
    if wasi_p3() {
        format!("builtin:{name}@p3")
    } else {
        format!("builtin:{name}")
    }
}

/// One of the repository's guests (`guest/src/bin/{name}.rs`), as built
/// for embedding in the host, in the form this test runs.
pub fn repo_guest(name: &str) -> PathBuf {
    let dir = if wasi_p3() {
        env!("TCPHOST_P3_GUEST_DIR")
    } else {
        env!("TCPHOST_GUEST_DIR")
    };
    let path = PathBuf::from(dir).join(format!("{name}.wasm"));
    assert!(path.is_file(), "no guest named {name}");
    path
}

/// A test guest's component, from `tests/guests/src/bin/{name}.rs`.
pub fn test_guest(name: &str) -> PathBuf {
    test_guests::path(name)
}

/// The hostile test guest, in the form this test runs (`hostile`, or
/// `hostile-p3` on WASI 0.3).
pub fn hostile_guest() -> PathBuf {
    test_guest(if wasi_p3() { "hostile-p3" } else { "hostile" })
}

/// A fresh directory for one test's files.
pub fn scratch_dir(tag: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("host-test-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    remove_at_exit(&dir);
    dir
}

/// The scratch directories this test process made, removed when it exits
/// (in the system's temporary directory, where a control socket's path
/// stays short, they would otherwise pile up run after run).
static SCRATCH: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn remove_at_exit(dir: &Path) {
    extern "C" fn remove_all() {
        if let Ok(dirs) = SCRATCH.lock() {
            for dir in dirs.iter() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: registers a plain function to run at exit.
        unsafe { libc::atexit(remove_all) };
    });
    SCRATCH.lock().unwrap().push(dir.to_owned());
}

/// Polls `condition` until it holds, at most [`TIMEOUT`]; `what` says
/// what was awaited when it never does.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
