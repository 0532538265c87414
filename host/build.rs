//! Builds the default guest (`guest/`, binary `seed`) to a wasm component so
//! the host can embed it: `cargo run -p host` then needs no other step.

#[path = "build_guests.rs"]
mod build_guests;

fn main() {
    let dir = build_guests::build("guest");
    let seed = dir.join("seed.wasm");
    assert!(
        seed.is_file(),
        "the guest build did not produce {}",
        seed.display()
    );
    println!("cargo:rustc-env=DEFAULT_GUEST_WASM={}", seed.display());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build_guests.rs");
    println!("cargo:rerun-if-changed=../wit");
}
