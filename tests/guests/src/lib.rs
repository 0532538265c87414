//! Where the test guests' components are, for the integration tests.
//!
//! The guests themselves are the binaries in `src/bin/`, compiled to
//! wasm32-wasip2 by `build.rs`.

use std::path::PathBuf;

/// The component built from `src/bin/{name}.rs`.
#[cfg(not(target_family = "wasm"))]
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("TEST_GUESTS_DIR")).join(format!("{name}.wasm"))
}

/// The example server of `guest/examples/{language}/`, built with that
/// language's toolchain by `build.rs` (`languages.rs`) when the build was
/// asked for them (`TCPHOST_EXAMPLES=1`).
#[cfg(not(target_family = "wasm"))]
pub fn example(language: &str) -> PathBuf {
    let path = PathBuf::from(match language {
        "python" => env!("PYTHON_EXAMPLE"),
        "c" => env!("C_EXAMPLE"),
        "js" => env!("JS_EXAMPLE"),
        // The same JavaScript file built with ComponentizeJS: its known
        // failure (tests/examples.rs).
        "js-componentize-js" => env!("JS_COMPONENTIZE_JS_EXAMPLE"),
        "rust" => return path("rust-seed"),
        other => panic!("no example in {other}"),
    });
    assert!(
        !path.as_os_str().is_empty(),
        "the {language} example is built only with TCPHOST_EXAMPLES=1"
    );
    path
}
