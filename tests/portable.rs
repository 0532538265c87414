//! The repository's guests in their standard forms: portable WASI 0.2
//! (`guest` built without its `readiness` feature,
//! `builtin:NAME@p2-portable`) and WASI 0.3 (feature `p3`,
//! `builtin:NAME@p3`): standard `wasi:*` imports only, so the same file
//! runs on any runtime of that WASI version, and served by this host like
//! the default form.

mod common;

use common::*;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The portable build of guest `name`.
fn portable_guest(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("TCPHOST_PORTABLE_GUEST_DIR")).join(format!("{name}.wasm"));
    assert!(path.is_file(), "no portable guest named {name}");
    path
}

/// The WASI 0.3 build of guest `name`.
fn p3_guest(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("TCPHOST_P3_GUEST_DIR")).join(format!("{name}.wasm"));
    assert!(path.is_file(), "no WASI 0.3 guest named {name}");
    path
}

/// The interfaces a component imports (`package:name/interface@version`).
fn imports(path: &std::path::Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let mut names = Vec::new();
    // Only the outer component's imports: nested modules' and components'
    // are satisfied inside it.
    let mut depth = 0u32;
    for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
        match payload.unwrap() {
            wasmparser::Payload::ModuleSection { .. }
            | wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            wasmparser::Payload::ComponentImportSection(section) if depth == 0 => {
                for import in section {
                    names.push(import.unwrap().name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    names
}

/// The guests of `guest/src/bin/`.
fn guest_names() -> Vec<String> {
    let bins = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guest/src/bin");
    std::fs::read_dir(bins)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn the_portable_guests_import_only_standard_wasi_interfaces() {
    let names = guest_names();
    assert!(names.len() >= 4, "{names:?}");
    for name in &names {
        let portable = imports(&portable_guest(name));
        assert!(
            portable.iter().any(|i| i.starts_with("wasi:sockets/tcp@")),
            "{name}: {portable:?}"
        );
        let private: Vec<&String> = portable
            .iter()
            .filter(|i| !i.starts_with("wasi:"))
            .collect();
        assert!(private.is_empty(), "{name} imports {private:?}");
        // The check tells the forms apart: the default one uses the
        // host's extension.
        let default = imports(&repo_guest(name));
        assert!(
            default
                .iter()
                .any(|i| i.starts_with("tcphost:server/readiness@")),
            "{name}: {default:?}"
        );
    }
}

#[test]
fn the_wasi_p3_guests_use_wasi_0_3_sockets_and_only_standard_interfaces() {
    for name in guest_names() {
        let imports = imports(&p3_guest(&name));
        assert!(
            imports.iter().any(|i| i == "wasi:sockets/types@0.3.0"),
            "{name}: {imports:?}"
        );
        // No WASI 0.2 socket, no extension: the standard library's own
        // WASI 0.2 imports (environment, stdio, random) are all it keeps.
        let old_or_private: Vec<&String> = imports
            .iter()
            .filter(|i| !i.starts_with("wasi:") || i.starts_with("wasi:sockets/tcp@"))
            .collect();
        assert!(
            old_or_private.is_empty(),
            "{name} imports {old_or_private:?}"
        );
    }
}

#[test]
fn the_portable_seed_guest_answers_every_message_and_every_client() {
    seed_answers_every_message_and_every_client(&portable_guest("seed"));
}

#[test]
fn the_wasi_p3_seed_guest_answers_every_message_and_every_client() {
    seed_answers_every_message_and_every_client(&p3_guest("seed"));
}

/// The seed guest at `path` answers binary and full-size messages, and
/// many clients at once beside quiet ones; it never uses the extension.
fn seed_answers_every_message_and_every_client(path: &std::path::Path) {
    let (_host, addr) = Host::serve(Some(path));
    let mut stream = connect(addr);
    for message in [&b"hello\n"[..], b"\x00\xff binary \r\n", &[b'a'; 2048]] {
        assert_seed_reply(&round_trip(&mut stream, message));
    }
    // Many clients at once, each answered, quiet ones beside them.
    let idle: Vec<_> = (0..200).map(|_| connect(addr)).collect();
    let clients: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                let mut stream = connect(addr);
                for _ in 0..50 {
                    assert_seed_reply(&round_trip(&mut stream, b"ping\n"));
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    drop(idle);
    drop(stream);
    // It waits with `wasi:io/poll`, never the extension: the component the
    // host served does not import it, so it cannot call it.
    let extension: Vec<String> = imports(path)
        .into_iter()
        .filter(|i| i.starts_with("tcphost:"))
        .collect();
    assert!(
        extension.is_empty(),
        "{} imports {extension:?}",
        path.display()
    );
}

#[test]
fn a_manifest_names_each_form_of_a_built_in_guest() {
    let manifest = r#"
[[tenant]]
name = "portable"
component = "builtin:kv@p2-portable"
listen = ["127.0.0.1:0"]

[[tenant]]
name = "readiness"
component = "builtin:kv@p2"
listen = ["127.0.0.1:0"]

[[tenant]]
name = "p3"
component = "builtin:kv@p3"
listen = ["127.0.0.1:0"]
"#;
    let tenants = Tenants::start(manifest, &["portable", "readiness", "p3"], &[]);
    for name in ["portable", "readiness", "p3"] {
        let mut stream = connect(tenants.addr(name));
        assert_eq!(round_trip(&mut stream, b"SET k v\n"), "OK\n", "{name}");
        assert_eq!(round_trip(&mut stream, b"GET k\n"), "VALUE v\n", "{name}");
    }
}

#[test]
fn an_unknown_form_is_a_clear_error_listing_the_forms() {
    let dir = scratch_dir("forms");
    let path = dir.join("tenants.toml");
    std::fs::write(
        &path,
        "[[tenant]]\nname = \"t\"\ncomponent = \"builtin:seed@p9\"\nlisten = [\"127.0.0.1:0\"]\n",
    )
    .unwrap();
    let (status, stderr) = run_host(&[std::ffi::OsStr::new("--config"), path.as_os_str()]);
    assert_eq!(status.code(), Some(78), "a configuration error: {stderr}");
    assert_clean_error(&stderr, "there is no built-in guest named \"seed@p9\"");
    assert!(stderr.contains("NAME@p2-portable"), "{stderr}");
}

#[test]
fn a_client_the_portable_guest_cannot_serve_yet_waits_without_losing_bytes() {
    // A reply buffered while the client does not read is delivered once it
    // does (the loop's write path is the same in both forms).
    echo_loses_no_byte(&portable_guest("echo"));
}

#[test]
fn a_client_the_wasi_p3_guest_cannot_serve_yet_waits_without_losing_bytes() {
    // The 0.3 loop reads no more until the host has taken the last answer.
    echo_loses_no_byte(&p3_guest("echo"));
}

/// 200 KB sent to the echo guest at `path` before reading come back whole.
fn echo_loses_no_byte(path: &std::path::Path) {
    let (_host, addr) = Host::serve(Some(path));
    let mut stream = connect(addr);
    let message = vec![b'x'; 200_000];
    stream.write_all(&message).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    while got.len() < message.len() && Instant::now() < deadline {
        let mut buf = [0u8; 65536];
        match std::io::Read::read(&mut stream, &mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read: {e}"),
        }
    }
    assert_eq!(got.len(), message.len());
}
