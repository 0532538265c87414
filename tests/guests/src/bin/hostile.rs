//! A hostile guest, driven by its test: each line a client sends names one
//! thing to attempt, and the guest answers with one line saying what
//! happened (`ok ...` or `denied ...`).
//!
//! Commands: `bind ADDR`, `connect ADDR`, `udp ADDR`, `resolve NAME`,
//! `read PATH`, `env NAME`, `panic`, `exit CODE`, `spin` (compute forever),
//! `spin-clock` (call the host forever, never waiting: read the clock),
//! `say N` (print N lines),
//! `alloc` (allocate without bound), `listen N` (bind and listen on the
//! granted address N more times, holding every socket), `poll-flood N`
//! (one `poll` over a list repeating one pollable N times), `random N`
//! (ask the host for N random bytes at once), `random-loop N` (ask for N
//! random bytes at once, again and again, forever), `shout N` (write N
//! control characters to stdout in one `write`, past any permit),
//! `shout-loop N` (write control characters to stdout forever, N bytes
//! at a time within each permit), `connect-hold N ADDR` (open
//! N connections to ADDR and hold them), `blast` (write to this client,
//! which does not read, until the stream is full, then close it and say
//! how long the close took), `hoard` (from then on accept every
//! connection and never read or close it), `socketpair` (make a pair of
//! connected sockets as CPython's `socket.socketpair()` does on WASI, and
//! hold them and the listener: answers the listener's address and the
//! client end's), `socketpairs N` (make N such pairs, closing each
//! listener, holding the pairs). Serves one client at a time. With
//! `LISTEN_AFTER_MS` in its environment it waits that long before it
//! listens (a slow start).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

fn main() {
    let addr = std::env::var("LISTEN_ADDR").expect("the host sets LISTEN_ADDR");
    if let Some(ms) = std::env::var("LISTEN_AFTER_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
    {
        std::thread::sleep(Duration::from_millis(ms));
    }
    let listener = TcpListener::bind(&addr).expect("binding the granted address");
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        // One buffered reader, writing through it: wasip2 sockets cannot
        // be cloned.
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if line.trim() == "blast" {
                blast(reader.into_inner());
                break;
            }
            if line.trim() == "hoard" {
                let _ = writeln!(reader.get_mut(), "ok hoarding");
                hoard(&listener, reader.into_inner());
            }
            let answer = attempt(line.trim());
            println!("{}: {answer}", line.trim());
            if writeln!(reader.get_mut(), "{answer}").is_err() {
                break;
            }
        }
    }
}

/// Writes to `stream` until it takes no more, then closes it, timing the
/// close.
fn blast(mut stream: TcpStream) {
    if let Err(e) = stream.set_nonblocking(true) {
        println!("blast: {e}");
        return;
    }
    let chunk = vec![b'x'; 65536];
    let mut sent = 0;
    while let Ok(n) = stream.write(&chunk) {
        sent += n;
    }
    let started = std::time::Instant::now();
    drop(stream);
    println!(
        "blasted {sent} bytes, closed in {} ms",
        started.elapsed().as_millis()
    );
}

/// Accepts every connection and holds it open without reading, forever.
fn hoard(listener: &TcpListener, first: TcpStream) -> ! {
    let mut held = vec![first];
    loop {
        if let Ok((stream, _)) = listener.accept() {
            held.push(stream);
            println!("hoarding {} connections", held.len());
        }
    }
}

/// What CPython's `socket.socketpair()` does where there is no AF_UNIX
/// (WASI): listen on 127.0.0.1:0, connect to it, accept, check that each
/// end's address is the other's peer, and pass a byte each way. The
/// listener and the two ends.
fn socketpair() -> std::io::Result<(TcpListener, (TcpStream, TcpStream))> {
    use std::io::Read;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut client = TcpStream::connect(addr)?;
    let (mut server, peer) = listener.accept()?;
    if server.local_addr()? != client.peer_addr()?
        || client.local_addr()? != server.peer_addr()?
        || peer != client.local_addr()?
    {
        return Err(std::io::Error::other("the ends' addresses disagree"));
    }
    let mut byte = [0u8; 1];
    client.write_all(b"x")?;
    server.read_exact(&mut byte)?;
    server.write_all(b"y")?;
    client.read_exact(&mut byte)?;
    Ok((listener, (client, server)))
}

/// Tries what `command` says and describes the outcome.
fn attempt(command: &str) -> String {
    let (verb, arg) = command.split_once(' ').unwrap_or((command, ""));
    let outcome = match verb {
        "bind" => TcpListener::bind(arg).map(|l| format!("{:?}", l.local_addr())),
        "connect" => match arg.parse() {
            Ok(addr) => TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .map(|_| "connected".into()),
            Err(e) => return format!("bad address: {e}"),
        },
        "udp" => UdpSocket::bind(arg)
            .and_then(|s| s.send_to(b"hello", arg))
            .map(|n| format!("sent {n}")),
        "resolve" => (arg, 80)
            .to_socket_addrs()
            .map(|addrs| format!("{:?}", addrs.collect::<Vec<_>>())),
        "read" => std::fs::read_to_string(arg).map(|s| format!("{} bytes", s.len())),
        "env" => {
            return std::env::var(arg)
                .map_or_else(|e| format!("denied {e}"), |v| format!("ok {v}"));
        }
        "panic" => panic!("asked to panic"),
        "spin" => {
            let mut n = 0u64;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "spin-clock" => {
            // Each `now` is a host call that returns at once: the guest
            // never waits for anything, yet never computes for long
            // between two host calls either.
            let mut last = std::time::Instant::now();
            loop {
                last = std::hint::black_box(std::time::Instant::now().max(last));
            }
        }
        "say" => {
            let n: u32 = arg.parse().unwrap_or(1);
            for i in 0..n {
                println!("chatter {i}");
            }
            Ok(format!("{n} lines"))
        }
        "alloc" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "listen" => {
            let addr = std::env::var("LISTEN_ADDR").unwrap_or_default();
            let (mut held, mut refused, mut first) = (Vec::new(), 0, None);
            for _ in 0..arg.parse().unwrap_or(1) {
                match TcpListener::bind(&addr) {
                    Ok(listener) => held.push(listener),
                    Err(e) => {
                        refused += 1;
                        first.get_or_insert(e);
                    }
                }
            }
            let listening = held.len();
            // Held for good: what they cost the host must stay bounded.
            std::mem::forget(held);
            let why = first
                .map(|e| format!(" ({:?})", e.kind()))
                .unwrap_or_default();
            Ok(format!("{listening} listening, {refused} refused{why}"))
        }
        "connect-hold" => {
            let (n, target) = arg.split_once(' ').unwrap_or(("1", arg));
            let Ok(target) = target.parse() else {
                return format!("bad address: {target}");
            };
            let (mut held, mut refused, mut first) = (Vec::new(), 0, None);
            for _ in 0..n.parse().unwrap_or(1) {
                match TcpStream::connect_timeout(&target, Duration::from_secs(2)) {
                    Ok(stream) => held.push(stream),
                    Err(e) => {
                        refused += 1;
                        first.get_or_insert(e);
                    }
                }
            }
            let connected = held.len();
            std::mem::forget(held);
            let why = first.map(|e| format!(" ({e})")).unwrap_or_default();
            Ok(format!("{connected} connected, {refused} refused{why}"))
        }
        "poll-flood" => {
            use guest::bindings::wasi::clocks::monotonic_clock::subscribe_duration;
            let timer = subscribe_duration(1);
            let list = vec![&timer; arg.parse().unwrap_or(1)];
            let ready = guest::bindings::wasi::io::poll::poll(&list);
            Ok(format!("{} ready", ready.len()))
        }
        "random" => {
            let bytes =
                guest::bindings::wasi::random::random::get_random_bytes(arg.parse().unwrap_or(1));
            Ok(format!("{} random bytes", bytes.len()))
        }
        "random-loop" => loop {
            let bytes =
                guest::bindings::wasi::random::random::get_random_bytes(arg.parse().unwrap_or(1));
            std::hint::black_box(bytes);
        },
        "shout" => {
            let stdout = guest::bindings::wasi::cli::stdout::get_stdout();
            let noise = vec![0x1b; arg.parse().unwrap_or(1)];
            stdout
                .write(&noise)
                .map(|()| format!("wrote {}", noise.len()))
                .map_err(|e| std::io::Error::other(format!("{e:?}")))
        }
        "shout-loop" => {
            let stdout = guest::bindings::wasi::cli::stdout::get_stdout();
            let noise = vec![0x1b; arg.parse().unwrap_or(1)];
            loop {
                let permit = stdout.check_write().unwrap_or(0) as usize;
                let _ = stdout.write(&noise[..noise.len().min(permit)]);
            }
        }
        "socketpair" => socketpair().map(|(listener, pair)| {
            let described = format!(
                "{} {}",
                listener
                    .local_addr()
                    .map_or_else(|e| e.to_string(), |a| a.to_string()),
                pair.0
                    .local_addr()
                    .map_or_else(|e| e.to_string(), |a| a.to_string())
            );
            std::mem::forget((listener, pair));
            described
        }),
        "socketpairs" => {
            let (mut held, mut first) = (Vec::new(), None);
            for _ in 0..arg.parse().unwrap_or(1) {
                match socketpair() {
                    // The listener closed, as CPython's fallback does.
                    Ok((_, pair)) => held.push(pair),
                    Err(e) => {
                        first = Some(e);
                        break;
                    }
                }
            }
            let made = held.len();
            std::mem::forget(held);
            let why = first
                .map(|e| format!(", then {:?}: {e}", e.kind()))
                .unwrap_or_default();
            Ok(format!("{made} pairs{why}"))
        }
        "exit" => std::process::exit(arg.parse().unwrap_or(1)),
        _ => return format!("unknown command {verb:?}"),
    };
    match outcome {
        Ok(what) => format!("ok {what}"),
        Err(e) => format!("denied {:?}: {e}", e.kind()),
    }
}
