//! Compiles this package's binaries to wasm32-wasip2 components for the
//! integration tests, and tells the library where they are; with
//! `TCPHOST_EXAMPLES=1`, also the examples of `guest/examples/` in other
//! languages, each with its own toolchain (which must be installed: the
//! build fails naming what is missing).

#[path = "../../host/build_guests.rs"]
mod build_guests;
mod languages;

fn main() {
    // The nested build of the guests themselves runs this script again, for
    // the wasm target: there is nothing to do then.
    if std::env::var("TARGET").is_ok_and(|t| t == build_guests::WASM_TARGET) {
        return;
    }
    println!("cargo:rerun-if-changed=languages.rs");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../../host/build_guests.rs");
    let dir = build_guests::build("test-guests", "tests/guests");
    println!("cargo:rustc-env=TEST_GUESTS_DIR={}", dir.display());
    println!("cargo:rerun-if-env-changed=TCPHOST_EXAMPLES");
    if !std::env::var("TCPHOST_EXAMPLES").is_ok_and(|v| v == "1") {
        // Not asked for: nothing but rustup is needed to build and test.
        for name in [
            "PYTHON_EXAMPLE",
            "C_EXAMPLE",
            "JS_EXAMPLE",
            "JS_COMPONENTIZE_JS_EXAMPLE",
        ] {
            println!("cargo:rustc-env={name}=");
        }
        return;
    }
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = languages::python(&workspace, &out);
    println!("cargo:rustc-env=PYTHON_EXAMPLE={}", python.display());
    let c = languages::c(&workspace, &out);
    println!("cargo:rustc-env=C_EXAMPLE={}", c.display());
    let (js, js_componentize_js) = languages::js(&workspace, &out);
    println!("cargo:rustc-env=JS_EXAMPLE={}", js.display());
    println!(
        "cargo:rustc-env=JS_COMPONENTIZE_JS_EXAMPLE={}",
        js_componentize_js.display()
    );
}
