//! Graceful stop: on SIGTERM or SIGINT the host stops accepting, lets open
//! connections finish (each tenant's for up to its drain timeout), closes
//! the rest and exits 0; a second signal stops it at once.

mod common;

use common::*;
use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A manifest with the seed as tenant `t`, draining for `drain`.
fn seed_draining(drain: &str) -> String {
    format!(
        "[[tenant]]\nname = \"t\"\ncomponent = \"{}\"\nlisten = [\"127.0.0.1:0\"]\nlimits = {{ drain_timeout = \"{drain}\" }}\n",
        builtin("seed")
    )
}

/// Whether the peer closed `stream` (end of stream or reset) within
/// [`TIMEOUT`].
fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

#[test]
fn sigterm_with_no_clients_exits_zero() {
    let (mut host, _addr) = Host::serve(None);
    host.signal("TERM");
    assert_eq!(host.wait_exit().code(), Some(0));
    host.wait_for_log("received SIGTERM: accepting no more clients");
    host.wait_for_log("every connection closed; stopped");
}

#[test]
fn sigint_lets_open_connections_finish_refuses_new_ones_then_exits_zero() {
    let (mut host, addr) = Host::serve(None);
    let mut open = connect(addr);
    assert_seed_reply(&round_trip(&mut open, b"before\n"));
    host.signal("INT");
    host.wait_for_log("received SIGINT: accepting no more clients; waiting for 1 open");
    // New clients are refused at once, not left waiting.
    let refused = TcpStream::connect_timeout(&addr, TIMEOUT);
    assert!(refused.is_err(), "a new client was accepted while stopping");
    // The open one is still served, for as long as it likes.
    for _ in 0..5 {
        assert_seed_reply(&round_trip(&mut open, b"during\n"));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!host.log().contains("every connection closed"));
    drop(open);
    assert_eq!(host.wait_exit().code(), Some(0));
    host.wait_for_log("every connection closed; stopped");
}

#[test]
fn connections_that_outstay_the_drain_timeout_are_closed() {
    let t = Tenants::start(&seed_draining("1s"), &["t"], &[]);
    let mut host = t.host;
    let mut open = connect(t.addrs["t"]);
    assert_seed_reply(&round_trip(&mut open, b"hello\n"));
    let signalled = Instant::now();
    host.signal("TERM");
    assert_eq!(host.wait_exit().code(), Some(0));
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "stopped after {took:?}, before the drain timeout"
    );
    host.wait_for_log("drain timeout passed; stopped, closing 1 connections");
    assert!(
        closed_by_peer(&mut open),
        "the client saw its connection end"
    );
}

#[test]
fn while_draining_the_health_check_fails_and_nothing_new_starts() {
    let manifest = format!("[host]\nadmin = \"127.0.0.1:0\"\n\n{}", seed_draining("1h"));
    let t = Tenants::start(&manifest, &["t"], &[]);
    let admin = t.admin.unwrap();
    assert_eq!(http_get(admin, "/healthz").0, 200);
    // Answered, so the guest holds it: the host has a connection to wait for.
    let mut open = connect(t.addrs["t"]);
    assert_seed_reply(&round_trip(&mut open, b"hello\n"));
    t.host.signal("TERM");
    t.host
        .wait_for_log("received SIGTERM: accepting no more clients");
    let (code, body) = http_get(admin, "/healthz");
    assert_eq!(
        (code, body.as_str()),
        (503, "stopping: draining open connections\n")
    );
    // Nothing new starts while stopping: 503, as the endpoint is
    // unavailable for changes, not the request at fault.
    let (code, body) = t.post("/tenants/t/swap", &builtin("echo"));
    assert_eq!(
        (code, body.as_str()),
        (503, "not swapped: the host is stopping\n")
    );
    let (code, body) = t.post("/reload", "");
    assert_eq!(
        (code, body.as_str()),
        (503, "not reloaded, nothing changed: the host is stopping\n")
    );
    assert_seed_reply(&round_trip(&mut open, b"still the seed\n"));
}

#[test]
fn a_second_signal_stops_at_once() {
    let t = Tenants::start(&seed_draining("1h"), &["t"], &[]);
    let mut host = t.host;
    let mut open = connect(t.addrs["t"]);
    assert_seed_reply(&round_trip(&mut open, b"hello\n"));
    host.signal("TERM");
    host.wait_for_log("received SIGTERM: accepting no more clients");
    host.signal("INT");
    assert_eq!(
        host.wait_exit().code(),
        Some(130),
        "a forced stop cut connections: not a success"
    );
    host.wait_for_log("received SIGINT again: stopped at once, closing 1 connections");
    assert!(
        closed_by_peer(&mut open),
        "the client saw its connection end"
    );
}

also_on_wasi_p3!(
    sigterm_with_no_clients_exits_zero,
    sigint_lets_open_connections_finish_refuses_new_ones_then_exits_zero,
    connections_that_outstay_the_drain_timeout_are_closed,
    while_draining_the_health_check_fails_and_nothing_new_starts,
    a_second_signal_stops_at_once,
);

also_with_two_instances!(
    sigterm_with_no_clients_exits_zero,
    sigint_lets_open_connections_finish_refuses_new_ones_then_exits_zero,
    connections_that_outstay_the_drain_timeout_are_closed,
    while_draining_the_health_check_fails_and_nothing_new_starts,
    a_second_signal_stops_at_once,
);
