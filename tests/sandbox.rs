//! The sandbox, proven with a hostile guest: every ungranted capability is
//! refused, the guest sees the refusal, and the host logs what was tried.
//! Also: any std::net component runs.

mod common;

use common::*;
use std::net::{SocketAddr, TcpListener, TcpStream};

/// The hostile guest, running, with a connection to give it orders.
fn hostile() -> (Host, SocketAddr, TcpStream) {
    let (host, addr) = Host::serve_as(&hostile_guest(), "hostile");
    let stream = connect(addr);
    (host, addr, stream)
}

fn order(stream: &mut TcpStream, command: &str) -> String {
    round_trip(stream, format!("{command}\n").as_bytes())
}

/// The warning the host logged about `needle`.
fn refusal(host: &Host, needle: &str) -> String {
    let line = host.wait_for_log(needle);
    assert!(line.contains("WARN"), "refusals are warnings: {line}");
    assert!(
        line.contains("tenant=\"hostile\""),
        "refusals name the tenant: {line}"
    );
    line
}

#[test]
fn binding_another_port_is_refused_and_logged() {
    let (host, addr, mut stream) = hostile();
    let other = SocketAddr::new(addr.ip(), addr.port().wrapping_add(1).max(1024));
    let reply = order(&mut stream, &format!("bind {other}"));
    assert!(reply.starts_with("denied"), "{reply}");
    refusal(
        &host,
        &format!("refused: bind/listen on {other} is not granted"),
    );
}

#[test]
fn binding_all_interfaces_is_refused_and_logged() {
    let (host, addr, mut stream) = hostile();
    for wildcard in [
        format!("0.0.0.0:{}", addr.port()),
        format!("[::]:{}", addr.port()),
    ] {
        let reply = order(&mut stream, &format!("bind {wildcard}"));
        assert!(reply.starts_with("denied"), "{wildcard}: {reply}");
        refusal(
            &host,
            &format!("refused: bind/listen on {wildcard} is not granted"),
        );
    }
}

#[test]
fn connecting_out_is_refused_and_logged() {
    let (host, _addr, mut stream) = hostile();
    // A real listener the guest would reach if it were allowed to.
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    target.set_nonblocking(true).unwrap();
    let target_addr = target.local_addr().unwrap();
    let reply = order(&mut stream, &format!("connect {target_addr}"));
    assert!(reply.starts_with("denied"), "{reply}");
    refusal(
        &host,
        &format!("refused: outbound connection to {target_addr} is not granted"),
    );
    assert!(
        target.accept().is_err(),
        "the guest's connection reached the target"
    );
}

#[test]
fn udp_is_refused_and_logged() {
    let (host, _addr, mut stream) = hostile();
    let reply = order(&mut stream, "udp 127.0.0.1:0");
    assert!(reply.starts_with("denied"), "{reply}");
    refusal(&host, "refused: UDP sockets are not granted");
}

#[test]
fn name_lookups_are_refused_and_logged() {
    let (host, _addr, mut stream) = hostile();
    let reply = order(&mut stream, "resolve localhost");
    assert!(reply.starts_with("denied"), "{reply}");
    refusal(
        &host,
        "refused: name lookup of \"localhost\" is not granted",
    );
}

#[test]
fn the_filesystem_has_no_directories_and_asking_for_them_is_no_refusal() {
    let (host, _addr, mut stream) = hostile();
    let reply = order(&mut stream, "read /etc/passwd");
    assert!(reply.starts_with("denied"), "{reply}");
    host.wait_for_log("asked for its preopened directories: none are granted");
    assert!(!host.log().contains("refused"), "{}", host.log());
}

#[test]
fn the_guest_sees_only_its_listen_address_in_the_environment() {
    let (_host, addr, mut stream) = hostile();
    assert_eq!(
        order(&mut stream, "env LISTEN_ADDR"),
        format!("ok {addr}\n")
    );
    for inherited in ["PATH", "HOME", "RUST_LOG", "CARGO_MANIFEST_DIR"] {
        let reply = order(&mut stream, &format!("env {inherited}"));
        assert!(reply.starts_with("denied"), "{inherited} leaked: {reply}");
    }
}

#[test]
fn the_guest_keeps_serving_after_refusals() {
    let (_host, addr, mut stream) = hostile();
    order(&mut stream, "connect 127.0.0.1:1");
    order(&mut stream, "udp 127.0.0.1:0");
    drop(stream);
    let mut again = connect(addr);
    assert!(order(&mut again, "env LISTEN_ADDR").starts_with("ok"));
}

#[test]
fn a_plain_std_net_guest_runs() {
    let (_host, addr) = Host::serve(Some(&test_guest("std-echo")));
    let mut stream = connect(addr);
    assert_eq!(round_trip(&mut stream, b"hi there\n"), "echo: hi there\n");
}

#[test]
fn a_trapping_guest_is_reported_with_its_wasm_backtrace() {
    let (mut host, _addr, mut stream) = hostile();
    use std::io::Write;
    stream.write_all(b"panic\n").unwrap();
    let status = host.wait_exit();
    assert_eq!(status.code(), Some(70), "a trap is a software failure (70)");
    let log = host.log();
    assert_clean_error(&log, "error: guest 'hostile' trapped:");
    assert!(log.contains("wasm backtrace:"), "{log}");
    // The guest's panic message reached the log through its stderr.
    assert!(log.contains("asked to panic"), "{log}");
}

#[test]
fn a_guest_exiting_with_an_error_status_is_reported() {
    let (mut host, _addr, mut stream) = hostile();
    use std::io::Write;
    // WASI 0.2's `exit` carries only success or failure: any non-zero
    // status arrives as 1.
    stream.write_all(b"exit 3\n").unwrap();
    assert_eq!(host.wait_exit().code(), Some(70));
    assert_clean_error(&host.log(), "error: guest 'hostile' exited with status 1");
}

also_on_wasi_p3!(
    binding_another_port_is_refused_and_logged,
    binding_all_interfaces_is_refused_and_logged,
    connecting_out_is_refused_and_logged,
    udp_is_refused_and_logged,
    name_lookups_are_refused_and_logged,
    the_filesystem_has_no_directories_and_asking_for_them_is_no_refusal,
    the_guest_sees_only_its_listen_address_in_the_environment,
    the_guest_keeps_serving_after_refusals,
    a_trapping_guest_is_reported_with_its_wasm_backtrace,
    a_guest_exiting_with_an_error_status_is_reported,
);

/// WASI 0.3 binds a socket that listens unbound implicitly, to an
/// ephemeral port: never a granted address, so refused and logged.
#[test]
fn wasi_p3_listening_without_binding_is_refused_and_logged() {
    on_wasi_p3(|| {
        let (host, _addr, mut stream) = hostile();
        let reply = order(&mut stream, "listen-unbound");
        assert!(reply.starts_with("denied"), "{reply}");
        refusal(&host, "refused: bind/listen on 0.0.0.0:0 is not granted");
    });
}

/// Dropping the stream a WASI 0.3 guest gave `send` shuts the connection
/// down for writing, as the WIT says: the client sees the end of the
/// stream while the guest still holds the socket.
#[test]
fn wasi_p3_closing_the_send_stream_ends_what_the_client_reads() {
    on_wasi_p3(|| {
        let (_host, _addr, mut stream) = hostile();
        assert_eq!(order(&mut stream, "half-close"), "ok half-closing\n");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut rest = Vec::new();
        let read = std::io::Read::read_to_end(&mut stream, &mut rest);
        assert!(read.is_ok() && rest.is_empty(), "{read:?} {rest:?}");
    });
}

#[test]
fn the_one_tenant_command_line_grants_environment_outbound_addresses_and_memory() {
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let target_addr = target.local_addr().unwrap();
    let (host, addr) = Host::serve_with(
        Some(&hostile_guest()),
        &[
            "--name",
            "hostile",
            "--env",
            "GREETING=hello there",
            "--connect",
            &target_addr.to_string(),
            "--max-memory",
            "32 MiB",
        ],
    );
    let mut stream = connect(addr);
    assert_eq!(order(&mut stream, "env GREETING"), "ok hello there\n");
    assert_eq!(
        order(&mut stream, &format!("connect {target_addr}")),
        "ok connected\n"
    );
    // Nothing else is granted.
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let reply = order(
        &mut stream,
        &format!("connect {}", other.local_addr().unwrap()),
    );
    assert!(reply.starts_with("denied"), "{reply}");
    // The memory limit given: a guest that allocates without end is
    // refused past 32 MiB.
    use std::io::Write;
    stream.write_all(b"alloc\n").unwrap();
    host.wait_for_log("is past the limit of 33554432 bytes");
}

#[test]
fn the_one_tenant_command_line_sets_the_cpu_limit() {
    let (host, addr) = Host::serve_with(
        Some(&hostile_guest()),
        &["--name", "hostile", "--cpu-limit", "250ms"],
    );
    use std::io::Write;
    connect(addr).write_all(b"spin\n").unwrap();
    host.wait_for_log("past its CPU limit of 250 ms");
}

#[test]
fn one_tenant_settings_that_cannot_work_are_usage_errors() {
    for (args, why) in [
        (["--env", "NOEQUALS"], "is not KEY=VALUE"),
        (["--env", "LISTEN_ADDR=x"], "is set by the host"),
        (["--max-memory", "1 KiB"], "at least 1 MiB"),
        (["--cpu-limit", "0ms"], "at least 1ms"),
    ] {
        let (status, log) = run_host(&args);
        assert_eq!(status.code(), Some(64), "{args:?}: {log}");
        assert!(log.contains(why), "{args:?}: {log}");
    }
}
