//! The seed's server in Rust with the standard library only (and `poll(2)`
//! from the `libc` crate: wasm32-wasip2 has no threads, so one thread
//! waits on every socket at once, as a C server would).
//!
//! It listens on LISTEN_ADDR (the address the host grants it), answers
//! every read of up to 2048 bytes with `rust socket server : N` (N random
//! in 0..100, one reply per line), serves many clients at once, and logs
//! each connect, payload and disconnect.
//!
//! Build: `cargo build --target wasm32-wasip2 --release` of a package with
//! this file as its `main.rs` and `libc = "0.2"` (in this repository it is
//! the `rust-seed` binary of `tests/guests`).

#[cfg(target_family = "wasm")]
fn main() {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    let addr = std::env::var("LISTEN_ADDR").expect("the host sets LISTEN_ADDR");
    let listener = TcpListener::bind(&addr).expect("binding the granted address");
    println!("listening on {addr}");
    let mut clients: Vec<(TcpStream, SocketAddr)> = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        let mut fds: Vec<libc::pollfd> = std::iter::once(listener.as_raw_fd())
            .chain(clients.iter().map(|(c, _)| c.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            eprintln!("poll: {}", std::io::Error::last_os_error());
            std::process::exit(1);
        }
        // Clients first, last to first, so removing one keeps the others'
        // places.
        for i in (1..fds.len()).rev() {
            if fds[i].revents == 0 {
                continue;
            }
            let (client, peer) = &mut clients[i - 1];
            match client.read(&mut buf) {
                Ok(0) | Err(_) => {
                    println!("{peer}: disconnected");
                    clients.swap_remove(i - 1);
                }
                Ok(n) => {
                    println!("{peer}: {}", String::from_utf8_lossy(&buf[..n]).trim_end());
                    let reply = format!("rust socket server : {}\n", random_below(100));
                    if client.write_all(reply.as_bytes()).is_err() {
                        println!("{peer}: the reply could not be sent");
                    }
                }
            }
        }
        if fds[0].revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            eprintln!("the listener failed");
            std::process::exit(1);
        }
        // A readable listener has a client waiting: accept does not block.
        if fds[0].revents != 0
            && let Ok((client, peer)) = listener.accept()
        {
            println!("{peer}: connected");
            clients.push((client, peer));
        }
    }
}

/// A random number below `n`, from the standard library's own source of
/// randomness (its hash seeds come from `wasi:random`).
#[cfg(target_family = "wasm")]
fn random_below(n: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % n
}

#[cfg(not(target_family = "wasm"))]
fn main() {}
