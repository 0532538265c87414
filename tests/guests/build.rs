//! Compiles this package's binaries to wasm32-wasip2 components for the
//! integration tests, and tells the library where they are.

#[path = "../../host/build_guests.rs"]
mod build_guests;

fn main() {
    // The nested build of the guests themselves runs this script again, for
    // the wasm target: there is nothing to do then.
    if std::env::var("TARGET").is_ok_and(|t| t == build_guests::WASM_TARGET) {
        return;
    }
    let dir = build_guests::build("test-guests", "tests/guests");
    println!("cargo:rustc-env=TEST_GUESTS_DIR={}", dir.display());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../../host/build_guests.rs");
}
