//! What wasmtime's own socket test programs (`p2_tcp_*`, `p3_sockets_tcp_*`
//! at the tag our WIT comes from) check, on this host: the reference's
//! behaviours, driven by the test guests over the instance's private
//! loopback (`socket-spec`'s `check NAME` on WASI 0.2, `hostile-p3`'s
//! commands on 0.3), each beside a neighbour sharing the guest's thread,
//! and a guest sending megabytes to a client that reads slowly over real
//! TCP. Where the host differs on purpose, `wit/world.wit` and
//! `wit/p3/world.wit` say so.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// The slowest round trip the neighbour may see: generous for a loaded
/// 2-core machine running the debug host; a guest stalled in a send or a
/// host thread held would exceed it.
const NEIGHBOUR_LATENCY: Duration = Duration::from_secs(1);

/// Longer than this, a client of a guest sending to a slow one was not
/// served: the guest stalled (a send that waited forever stalled it for
/// good). Loose: fifteen hosts share this machine's two cores meanwhile.
const STALL: Duration = Duration::from_secs(5);

/// A host running the reference guest of this test's WASI version beside
/// the seed guest, on one guest thread, with `limits` added to the guest's
/// limits and `extra` to its tenant.
fn beside_a_neighbour(limits: &str, extra: &str) -> Tenants {
    let guest = test_guest(if wasi_p3() {
        "hostile-p3"
    } else {
        "socket-spec"
    });
    let manifest = format!(
        r#"
[host]
guest_threads = 1

[[tenant]]
name = "neighbour"
component = "builtin:seed"
listen = ["127.0.0.1:0"]

[[tenant]]
name = "reference"
component = "{}"
listen = ["127.0.0.1:0"]
limits = {{ restart = "never"{limits} }}
{extra}
"#,
        guest.display()
    );
    Tenants::start(&manifest, &["neighbour", "reference"], &[])
}

/// Runs the reference check `name` in the guest of `t`, the neighbour
/// doing round trips meanwhile: the guest's one-line answer.
fn check(t: &Tenants, name: &str) -> String {
    let neighbour = Neighbour::start(t.addr("neighbour"));
    let mut stream = connect(t.addr("reference"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let command = if wasi_p3() {
        format!("{name}\n")
    } else {
        format!("check {name}\n")
    };
    let answer = round_trip(&mut stream, command.as_bytes());
    neighbour.assert_answered_within(NEIGHBOUR_LATENCY);
    answer
}

/// Asserts the guest's check `name` passed.
fn passes(name: &str) {
    let t = beside_a_neighbour("", "");
    let answer = check(&t, name);
    assert!(answer.starts_with("ok "), "{name}: {answer}");
}

#[test]
fn shutting_down_for_sending_sends_what_the_host_still_buffers_then_the_end() {
    // 64 KiB written through a 1024-byte send buffer, then shutdown(send)
    // at once: the peer reads every byte, then the end; the output stream
    // is closed to the guest from then on.
    passes("shutdown-send");
}

#[test]
fn shutting_down_for_receiving_closes_the_input_stream_and_drops_queued_data() {
    passes("shutdown-receive");
}

#[test]
fn wasi_p3_a_transfer_through_a_1024_byte_send_buffer_arrives_whole() {
    // 2 MiB in 256-byte writes through a pair whose sender has a 1024-byte
    // send buffer, read as it arrives: a write that found the buffer full
    // used to wait forever.
    on_wasi_p3(|| passes("transfer 2097152"));
}

#[test]
fn broadcast_and_multicast_addresses_are_invalid_arguments_before_any_grant() {
    passes("non-unicast");
}

#[test]
fn a_bind_to_the_wildcard_is_a_real_one_whose_port_a_connect_keeps() {
    passes("wildcard-bind");
    // Out to a real listener the tenant may connect to: the client the
    // listener sees comes from the port the guest was told at its bind.
    let outside = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = outside.local_addr().unwrap();
    let t = beside_a_neighbour("", &format!("connect = [\"{to}\"]"));
    let answer = check(&t, &format!("wildcard-connect {to}"));
    let port: u16 = answer
        .strip_prefix("ok ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("{answer}"));
    let (_client, peer) = outside.accept().unwrap();
    assert_eq!(peer.port(), port, "the guest was told {port}");
}

#[test]
fn wildcard_binds_count_against_the_outbound_cap_from_the_bind() {
    // Each holds a real socket: a guest binding without end is held to
    // its outbound cap (and told `new-socket-limit`), not the host's
    // descriptors.
    let t = beside_a_neighbour(", max_outbound_connections = 3", "");
    let answer = check(&t, "wildcard-hoard 50");
    // WASI 0.3 has no `new-socket-limit`: `other("new-socket-limit")`.
    assert!(
        answer.starts_with("ok 3 bound, then Some(")
            && (answer.contains("NewSocketLimit") || answer.contains("new-socket-limit")),
        "{answer}"
    );
    t.host.wait_for_log(
        "bind 0.0.0.0:0 to connect from: reference has 3 outbound connections open, its cap",
    );
}

#[test]
fn a_client_bound_to_a_private_loopback_port_connects_from_it() {
    passes("private-bind-connect");
}

#[test]
fn buffer_sizes_read_back_as_set_before_and_after_connecting() {
    passes("buffer-sizes");
}

#[test]
fn accepted_sockets_take_the_options_the_listener_has_when_they_are_accepted() {
    passes("inherit-after-listen");
}

also_on_wasi_p3!(
    broadcast_and_multicast_addresses_are_invalid_arguments_before_any_grant,
    wildcard_binds_count_against_the_outbound_cap_from_the_bind,
    a_bind_to_the_wildcard_is_a_real_one_whose_port_a_connect_keeps,
    a_client_bound_to_a_private_loopback_port_connects_from_it,
    buffer_sizes_read_back_as_set_before_and_after_connecting,
    accepted_sockets_take_the_options_the_listener_has_when_they_are_accepted,
    a_guest_sends_4_mib_to_a_client_reading_slowly_whole_and_keeps_serving,
);

/// Bytes of the 4 MiB the client sends to echo: a pattern, so a byte out
/// of place shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn a_guest_sends_4_mib_to_a_client_reading_slowly_whole_and_keeps_serving() {
    let manifest = format!(
        r#"
[host]
guest_threads = 1

[[tenant]]
name = "neighbour"
component = "builtin:seed"
listen = ["127.0.0.1:0"]

[[tenant]]
name = "echo"
component = "{}"
listen = ["127.0.0.1:0"]
"#,
        builtin("echo")
    );
    let t = Tenants::start(&manifest, &["neighbour", "echo"], &[]);
    let neighbour = Neighbour::start(t.addr("neighbour"));
    const SIZE: usize = 4 << 20;
    let sent = pattern(SIZE);
    // Another client of the same guest, connected first: it is answered
    // while the guest's sends to the slow one wait.
    let mut other = connect(t.addr("echo"));
    assert_eq!(round_trip(&mut other, b"first\n"), "first\n");
    let mut slow = connect(t.addr("echo"));
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut writer = slow.try_clone().unwrap();
    let to_send = sent.clone();
    let writing = std::thread::spawn(move || writer.write_all(&to_send));
    // Nothing read for a while: every buffer between the guest and this
    // client fills, and the guest's sends wait.
    std::thread::sleep(Duration::from_millis(300));
    let mut got = Vec::with_capacity(SIZE);
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut reads = 0u32;
    while got.len() < SIZE && Instant::now() < deadline {
        match slow.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read after {} bytes: {e}", got.len()),
        }
        reads += 1;
        // Slowly, and now and then a round trip of the other client.
        std::thread::sleep(Duration::from_millis(1));
        if reads.is_multiple_of(32) {
            let started = Instant::now();
            other.write_all(b"still there?\n").unwrap();
            let mut answer = [0u8; 13];
            other.read_exact(&mut answer).unwrap();
            assert_eq!(&answer, b"still there?\n");
            assert!(
                started.elapsed() <= STALL,
                "another client waited {:?} after {} bytes",
                started.elapsed(),
                got.len()
            );
        }
    }
    writing.join().unwrap().expect("sending 4 MiB");
    assert_eq!(got.len(), SIZE, "bytes echoed");
    assert!(got == sent, "the bytes came back out of order");
    neighbour.assert_answered_within(NEIGHBOUR_LATENCY);
}
