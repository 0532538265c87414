//! Builds the guests in `guest/` to wasm components so the host can embed
//! them (`seed`, the default, and `echo`, `upper`, `kv`): `cargo run -p host`
//! then needs no other step.

#[path = "build_guests.rs"]
mod build_guests;

fn main() {
    let dir = build_guests::build("guest", "guest");
    for (var, name) in [
        ("DEFAULT_GUEST_WASM", "seed"),
        ("ECHO_GUEST_WASM", "echo"),
        ("UPPER_GUEST_WASM", "upper"),
        ("KV_GUEST_WASM", "kv"),
    ] {
        let wasm = dir.join(format!("{name}.wasm"));
        assert!(
            wasm.is_file(),
            "the guest build did not produce {}",
            wasm.display()
        );
        println!("cargo:rustc-env={var}={}", wasm.display());
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build_guests.rs");
    println!("cargo:rerun-if-changed=../wit");
}
