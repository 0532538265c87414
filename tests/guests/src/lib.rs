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
