//! What guests written against POSIX and the WASI specification rely on,
//! over real TCP: readiness that does not lie (a server that polls and
//! then blocks in `accept` or `read` never hangs), a reply written at once
//! leaving in one piece, and the socket calls' documented errors.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[test]
fn a_server_that_polls_then_blocks_in_accept_and_read_serves_every_client() {
    let (_host, addr) = Host::serve(Some(&test_guest("posix-poll")));
    // Two clients taking turns: after each accept and each read the guest
    // polls again, and a listener or a connection reported ready with
    // nothing to take would block it in the call that follows, leaving
    // the other client unanswered.
    let mut clients = [connect(addr), connect(addr)];
    for client in &clients {
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
    }
    for i in 0..100 {
        for (n, client) in clients.iter_mut().enumerate() {
            // Every tenth message fills the guest's 2048-byte read buffer
            // exactly: the stream must not stay ready with nothing left.
            let message = if i % 10 == 9 {
                format!("{i:0>2047}")
            } else {
                format!("{i} from {n}")
            };
            assert_eq!(
                round_trip(client, format!("{message}\n").as_bytes()),
                format!("posix: {message}\n"),
                "round trip {i} of client {n}"
            );
        }
    }
    // A client arriving later is accepted as well.
    let mut late = connect(addr);
    assert_eq!(round_trip(&mut late, b"late\n"), "posix: late\n");
}

/// Reads once, as the seed's client does: whatever one `read` returns.
fn read_once(stream: &mut TcpStream) -> String {
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf).expect("a reply");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn a_reply_written_at_once_arrives_in_one_piece() {
    let (_host, addr) = Host::serve(None);
    let mut stream = connect(addr);
    // Past 64 KiB of replies on one connection: the stream's first write
    // permit is used up along the way, and no reply may straddle it.
    for i in 0..4000 {
        stream.write_all(b"hello\n").unwrap();
        let reply = read_once(&mut stream);
        assert!(
            reply.starts_with("rust socket server : ") && reply.ends_with('\n'),
            "reply {i} arrived as {reply:?}"
        );
    }
}

#[test]
fn the_socket_calls_return_the_errors_wasi_documents() {
    let (_host, addr) = Host::serve(Some(&test_guest("socket-spec")));
    let reply = round_trip(&mut connect(addr), b"check\n");
    assert!(reply.starts_with("ok "), "{reply}");
}
