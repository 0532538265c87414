//! The default guest serving over real TCP: the seed's reply to every
//! message, many clients at once, and clients that misbehave.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

#[test]
fn every_message_gets_a_seed_reply() {
    let (_host, addr) = Host::serve(None);
    let mut stream = connect(addr);
    for message in [
        &b"hello\n"[..],
        b"x",
        b"\x00\xff binary \r\n",
        &[b'a'; 2048],
    ] {
        assert_seed_reply(&round_trip(&mut stream, message));
    }
}

#[test]
fn the_guest_logs_connects_payloads_and_disconnects() {
    let (host, addr) = Host::serve(None);
    let mut stream = connect(addr);
    let local = stream.local_addr().unwrap();
    assert_seed_reply(&round_trip(&mut stream, b"ping\x1b[31m\n"));
    drop(stream);
    host.wait_for_log(&format!("connected: {local}"));
    // Control bytes arrive escaped, so a client cannot forge log lines.
    host.wait_for_log(&format!("received 10 bytes from {local}: ping\\x1b[31m\\n"));
    host.wait_for_log(&format!("disconnected: {local}"));
}

#[test]
fn every_one_of_many_busy_clients_is_served_not_only_the_first_hundred() {
    // More busy clients than tokio's cooperative budget (128 readiness
    // checks per task poll): each must get round trips while all hammer.
    let (_host, addr) = Host::serve(None);
    const CLIENTS: usize = 300;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(CLIENTS + 1));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (stop, barrier) = (stop.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut stream = connect(addr);
                barrier.wait();
                let mut answered = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    assert_seed_reply(&round_trip(&mut stream, b"ping\n"));
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    barrier.wait();
    std::thread::sleep(std::time::Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answered: Vec<u32> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    answered.sort_unstable();
    // A fair server gives each about the same share; one that checks only
    // the first sockets it is given leaves most with one answer or none.
    let (fewest, median) = (answered[0], answered[CLIENTS / 2]);
    assert!(
        fewest >= 5 && fewest * 4 >= median,
        "round trips per client: fewest {fewest}, median {median}"
    );
}

#[test]
fn two_hundred_concurrent_clients_are_all_answered() {
    let (_host, addr) = Host::serve(None);
    const CLIENTS: usize = 200;
    const ROUNDS: usize = 20;
    // Every client connects before any starts talking, so the guest holds
    // all 200 connections at once.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut stream = connect(addr);
                barrier.wait();
                for round in 0..ROUNDS {
                    assert_seed_reply(&round_trip(
                        &mut stream,
                        format!("client {i} round {round}\n").as_bytes(),
                    ));
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("every client gets all its replies");
    }
}

#[test]
fn a_silent_client_does_not_hold_up_others() {
    let (_host, addr) = Host::serve(None);
    let _silent = connect(addr);
    let mut half_sent = connect(addr);
    half_sent.write_all(b"no newline and then nothing").unwrap();
    let mut other = connect(addr);
    for _ in 0..10 {
        assert_seed_reply(&round_trip(&mut other, b"still here?\n"));
    }
}

#[test]
fn a_client_that_resets_does_not_disturb_the_others() {
    // No log limit: the test waits for the guest's lines, five a resetter,
    // past the default 100 a second.
    let t = Tenants::start(
        "[[tenant]]\nname = \"seed\"\ncomponent = \"builtin:seed\"\nlisten = [\"127.0.0.1:0\"]\nlimits = { log_lines_per_sec = 0, log_bytes_per_sec = 0 }\n",
        &["seed"],
        &[],
    );
    let (host, addr) = (&t.host, t.addr("seed"));
    let mut steady = connect(addr);
    assert_seed_reply(&round_trip(&mut steady, b"before\n"));
    // Log lines naming `peer` (the whole port) after `what` (a port freed
    // by a reset may be reused by the next resetter: each use is counted).
    let seen = |what: &str, peer: std::net::SocketAddr| {
        let needle = format!("{what}{peer}");
        host.log()
            .lines()
            .filter_map(|line| line.split_once(&needle))
            .filter(|(_, rest)| !rest.starts_with(|c: char| c.is_ascii_digit()))
            .count()
    };
    let mut resetters: Vec<std::net::SocketAddr> = Vec::new();
    for _ in 0..20 {
        let resetter = socket2::Socket::from(connect(addr));
        let mut resetter_stream: std::net::TcpStream = resetter.try_clone().unwrap().into();
        let peer = resetter_stream.local_addr().unwrap();
        resetters.push(peer);
        let uses = resetters.iter().filter(|p| **p == peer).count();
        resetter_stream.write_all(b"about to vanish\n").unwrap();
        // Reset once the guest holds the connection and read from it (a
        // client reset while still queued never reaches the guest: the
        // host's accept passes over it).
        wait_until("the guest reads from the resetter", || {
            seen("received 16 bytes from ", peer) >= uses
        });
        // Linger 0: closing sends RST instead of FIN.
        resetter.set_linger(Some(Duration::ZERO)).unwrap();
        drop(resetter_stream);
        drop(resetter);
        assert_seed_reply(&round_trip(&mut steady, b"during\n"));
    }
    assert_seed_reply(&round_trip(&mut steady, b"after\n"));
    // The guest noticed each reset and closed that connection instead of
    // leaking it.
    wait_until("the guest logs each resetter's disconnect", || {
        resetters.iter().all(|&peer| {
            let uses = resetters.iter().filter(|p| **p == peer).count();
            seen("disconnected: ", peer) >= uses
        })
    });
}

#[test]
fn a_half_closed_client_still_gets_its_reply() {
    let (_host, addr) = Host::serve(None);
    let mut stream = connect(addr);
    stream.write_all(b"last words\n").unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut rest = String::new();
    stream
        .read_to_string(&mut rest)
        .expect("the guest answers, then closes");
    assert_seed_reply(&rest);
}

#[test]
fn a_slow_reader_gets_every_reply_without_blocking_others() {
    let (_host, addr) = Host::serve(None);
    let mut flooder = connect(addr);
    // Write far more than fits in socket buffers without reading a reply:
    // the guest must stop reading from this client rather than queue
    // without bound, and keep serving everyone else.
    let writer_stream = flooder.try_clone().unwrap();
    // Set once the flooder is ahead of the guest (a write would block: the
    // socket buffers are full), or, should the guest keep up, has sent all.
    let ahead = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = std::thread::spawn({
        let ahead = ahead.clone();
        move || {
            let mut writer_stream = writer_stream;
            let chunk = [b'z'; 2048];
            let mut sent = 0usize;
            writer_stream.set_nonblocking(true).unwrap();
            while sent < 8 << 20 {
                match writer_stream.write(&chunk[..chunk.len().min((8 << 20) - sent)]) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        // Blocking again (for the reader too, which shares
                        // the socket) before saying so.
                        writer_stream.set_nonblocking(false).unwrap();
                        ahead.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    Err(_) => break,
                }
            }
            writer_stream.set_nonblocking(false).unwrap();
            ahead.store(true, std::sync::atomic::Ordering::SeqCst);
            writer_stream.shutdown(Shutdown::Write).unwrap();
            sent
        }
    });
    wait_until("the flooder fills the socket buffers", || {
        ahead.load(std::sync::atomic::Ordering::SeqCst)
    });
    let mut other = connect(addr);
    for _ in 0..10 {
        assert_seed_reply(&round_trip(&mut other, b"unaffected?\n"));
    }
    // Now read everything: every reply arrives whole, then the guest closes.
    let mut replies = String::new();
    flooder
        .read_to_string(&mut replies)
        .expect("all replies arrive");
    let sent = writer.join().unwrap();
    assert_eq!(
        sent,
        8 << 20,
        "the guest kept reading as the replies drained"
    );
    let lines: Vec<&str> = replies.split_inclusive('\n').collect();
    // Reads are at most 2048 bytes and each is answered.
    assert!(
        lines.len() >= sent / 2048,
        "too few replies: {}",
        lines.len()
    );
    for line in lines {
        assert_seed_reply(line);
    }
}

#[test]
fn with_no_arguments_the_host_takes_the_default_address_127_0_0_1_9800() {
    // The README's first command, `cargo run -p host`. The default port
    // is held while the host starts (by this test, or by a host the
    // README's command left running: the same either way), so the test
    // never races anything for it: the host must name that address as
    // the one it tried. That the embedded guest serves without a
    // component argument, every `Host::serve(None)` test proves.
    let _held = std::net::TcpListener::bind("127.0.0.1:9800");
    let mut host = Host::start::<&str>(&[]);
    let status = host.wait_exit();
    let log = host.log();
    assert_eq!(status.code(), Some(69), "{log}");
    assert!(
        log.contains("listen address 127.0.0.1:9800 is already in use"),
        "{log}"
    );
}

#[test]
fn without_a_usable_cache_directory_the_host_compiles_and_serves() {
    let host = Host::start_with_env(
        &["--listen", "127.0.0.1:0"],
        &[("HOME", "/proc/no-such-home"), ("XDG_CACHE_HOME", "")],
    );
    host.wait_for_log("no compile cache (cannot create its directory");
    let line = host.wait_for_log("seed: listening on ");
    let addr = addr_after(&line, "seed: listening on ");
    assert_seed_reply(&round_trip(&mut connect(addr), b"hello\n"));
}

/// `--max-connections` sets the one tenant's connection cap, as a
/// manifest's `max_connections` does: clients past it are reset before the
/// guest sees them, and a place given back is taken again.
#[test]
fn the_one_tenant_connection_cap_is_set_from_the_command_line() {
    let (_host, addr) = Host::serve_with(None, &["--max-connections", "2"]);
    // A client answered, kept open (the start-up's probes may still hold
    // places for a moment: tried again until one is free).
    let answered = || {
        let mut stream =
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut buf = [0u8; 64];
        stream.write_all(b"hi\n").ok()?;
        matches!(stream.read(&mut buf), Ok(n) if n > 0).then_some(stream)
    };
    let mut held = Vec::new();
    for _ in 0..2 {
        wait_until("a place under the cap", || {
            answered().map(|s| held.push(s)).is_some()
        });
    }
    // Past the cap: reset without a reply (the reset may even beat the
    // end of the connect). A client left waiting, or answered, fails.
    let reset = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionRefused
        )
    };
    match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Err(e) => assert!(reset(&e), "a client past the cap: connecting: {e}"),
        Ok(mut extra) => {
            extra
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let _ = extra.write_all(b"hi\n");
            let mut buf = [0u8; 16];
            match extra.read(&mut buf) {
                // A reset seen first by the write reads as the end.
                Ok(0) => {}
                Err(e) => assert!(reset(&e), "a client past the cap was not reset: {e}"),
                Ok(n) => panic!("a client past the cap got {n} bytes"),
            }
        }
    }
    drop(held.pop());
    wait_until("a place given back is taken again", || answered().is_some());
}
