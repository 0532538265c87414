//! Arbitrary text as a tenant manifest: parsing must return a manifest or
//! an error, never panic, and an error is one line naming the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = host::config::manifest::parse(Path::new("fuzz/tenants.toml"), text) {
        let message = e.to_string();
        assert!(message.starts_with("fuzz/tenants.toml"), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }
});
