//! Arbitrary bytes as a guest component: the loader must reject them with
//! a one-line error (or, rarely, accept a valid component), never panic.
#![no_main]

use host::runtime::engine::{Loader, new_engine};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn loader() -> &'static Loader {
    static LOADER: OnceLock<Loader> = OnceLock::new();
    LOADER.get_or_init(|| {
        let engine = new_engine(None).expect("an engine");
        Loader::new(engine, None).expect("a loader")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Err(e) = loader().load("fuzz.wasm", data) {
        let message = e.to_string();
        assert!(message.starts_with("fuzz.wasm"), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }
});
