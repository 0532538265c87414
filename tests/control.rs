//! Who may change what runs: the read-only admin endpoint refuses control
//! requests; the control endpoint wants its bearer token (or, on a Unix
//! socket, the socket file's permissions), logs an audit line for every
//! request and counts it.

mod common;

use common::*;
use std::io::{Read, Write};

/// A manifest with admin (and, through the test helpers, control)
/// endpoints and one seed tenant `t`.
const ONE: &str = "[host]\nadmin = \"127.0.0.1:0\"\n\n[[tenant]]\nname = \"t\"\ncomponent = \"builtin:seed\"\nlisten = [\"127.0.0.1:0\"]\n";

fn generation(t: &Tenants) -> u64 {
    t.status("t")["generation"].as_u64().unwrap()
}

#[test]
fn a_control_request_on_the_read_only_endpoint_is_refused_and_changes_nothing() {
    let t = Tenants::start(ONE, &["t"], &[]);
    let admin = t.admin.unwrap();
    let before = generation(&t);
    for (path, body) in [("/tenants/t/swap", "builtin:echo"), ("/reload", "")] {
        let (code, answer) = http_post_as(admin, path, body, Some(CONTROL_TOKEN));
        assert_eq!(code, 405, "{path}: {answer}");
        assert!(answer.contains("read-only"), "{answer}");
    }
    assert_eq!(generation(&t), before);
    assert_seed_reply(&round_trip(&mut connect(t.addr("t")), b"still\n"));
}

#[test]
fn control_requests_need_the_token_and_each_is_audited() {
    let t = Tenants::start(ONE, &["t"], &[]);
    let control = t.control.unwrap();
    let before = generation(&t);
    let (code, body) = http_post_as(control, "/tenants/t/swap", "builtin:echo", None);
    assert_eq!(code, 401, "{body}");
    let (code, body) = http_post_as(control, "/tenants/t/swap", "builtin:echo", Some("guess"));
    assert_eq!(code, 401, "{body}");
    assert_eq!(generation(&t), before, "a refused request changed nothing");
    let (code, body) = t.post("/tenants/t/swap", "builtin:echo");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        round_trip(&mut connect(t.addr("t")), b"echoed\n"),
        "echoed\n"
    );
    // From where, what, the outcome: one line per request.
    t.host
        .wait_for_log("POST /tenants/t/swap: refused, no bearer token");
    t.host
        .wait_for_log("POST /tenants/t/swap: refused, wrong bearer token");
    t.host.wait_for_log("POST /tenants/t/swap: 200 OK");
    assert!(
        !t.host.log().contains(CONTROL_TOKEN),
        "the token was logged"
    );
    let admin = t.admin.unwrap();
    let series = |outcome: &str| {
        format!("tcphost_control_requests_total{{action=\"swap\",outcome=\"{outcome}\"}}")
    };
    assert_eq!(metric(admin, &series("unauthorized")), 2.0);
    assert_eq!(metric(admin, &series("ok")), 1.0);
}

#[test]
fn replacing_the_token_file_rotates_the_token() {
    let t = Tenants::start(ONE, &["t"], &[]);
    let control = t.control.unwrap();
    assert_eq!(t.post("/reload", "").0, 200);
    std::fs::write(t.dir.join("control-token"), "the-next-token\n").unwrap();
    assert_eq!(t.post("/reload", "").0, 401, "the old token is refused");
    let (code, body) = http_post_as(control, "/reload", "", Some("the-next-token"));
    assert_eq!(code, 200, "{body}");
}

#[test]
fn a_tcp_control_endpoint_without_a_token_file_is_a_manifest_error() {
    let dir = scratch_dir("control-no-token");
    let manifest = dir.join("tenants.toml");
    std::fs::write(
        &manifest,
        ONE.replace("[host]\n", "[host]\ncontrol = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let (status, log) = run_host(&["--config".as_ref(), manifest.as_os_str()]);
    assert_eq!(status.code(), Some(1), "{log}");
    assert_clean_error(
        &log,
        &format!(
            "error: {}:2: host.control: a TCP control endpoint needs host.control_token_file",
            manifest.display()
        ),
    );
}

#[test]
fn a_unix_control_socket_is_owner_only_and_its_permissions_are_the_gate() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch_dir("control-unix");
    let socket = dir.join("control.sock");
    let manifest = dir.join("tenants.toml");
    std::fs::write(
        &manifest,
        ONE.replace(
            "[host]\n",
            &format!("[host]\ncontrol = \"unix:{}\"\n", socket.display()),
        ),
    )
    .unwrap();
    let host = Host::start(&["--config".as_ref(), manifest.as_os_str()]);
    host.wait_for_log("control: listening on unix:");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    stream
        .write_all(b"POST /reload HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    host.wait_for_log("audit: the unix socket: POST /reload: 200 OK");
}

#[test]
fn a_swap_loads_only_files_under_the_allowed_directories() {
    let t = Tenants::start(
        &ONE.replace("[host]\n", "[host]\ncomponent_dirs = [\"guests\"]\n"),
        &["t"],
        &[],
    );
    let guests = t.dir.join("guests");
    std::fs::create_dir_all(&guests).unwrap();
    let inside = guests.join("echo.wasm");
    std::fs::copy(repo_guest("echo"), &inside).unwrap();
    let outside = scratch_dir("elsewhere").join("upper.wasm");
    std::fs::copy(repo_guest("upper"), &outside).unwrap();
    let link = guests.join("link.wasm");
    std::os::unix::fs::symlink(&outside, &link).unwrap();

    let (code, body) = t.post("/tenants/t/swap", &outside.display().to_string());
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("is outside the directories a swap may load from"),
        "{body}"
    );
    let (code, body) = t.post("/tenants/t/swap", &link.display().to_string());
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains(&format!("(it leads to {})", outside.display())),
        "{body}"
    );
    assert_seed_reply(&round_trip(&mut connect(t.addr("t")), b"still\n"));

    let (code, body) = t.post("/tenants/t/swap", &inside.display().to_string());
    assert_eq!(code, 200, "{body}");
    assert_eq!(round_trip(&mut connect(t.addr("t")), b"in\n"), "in\n");
    let (code, body) = t.post("/tenants/t/swap", "builtin:upper");
    assert_eq!(code, 200, "{body}");
}
