//! A server written the way most POSIX servers are: blocking sockets, one
//! `poll()` over the listener and every client, then a blocking `accept()`
//! for a ready listener and a blocking `read()` for a ready client. It
//! relies on what POSIX promises: a descriptor `poll` reports readable does
//! not block the call that follows. Each line a client sends is answered
//! with `posix: LINE`.

#[cfg(target_family = "wasm")]
fn main() {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    let addr = std::env::var("LISTEN_ADDR").expect("the host sets LISTEN_ADDR");
    let listener = TcpListener::bind(&addr).expect("binding the granted address");
    let mut clients: Vec<TcpStream> = Vec::new();
    loop {
        let mut fds: Vec<libc::pollfd> = std::iter::once(listener.as_raw_fd())
            .chain(clients.iter().map(AsRawFd::as_raw_fd))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        assert!(n > 0, "poll failed: {}", std::io::Error::last_os_error());
        let mut closed = Vec::new();
        for (i, fd) in fds.iter().enumerate().skip(1).rev() {
            if fd.revents == 0 {
                continue;
            }
            let client = &mut clients[i - 1];
            let mut buf = [0u8; 2048];
            match client.read(&mut buf) {
                Ok(0) | Err(_) => closed.push(i - 1),
                Ok(n) => {
                    let line = String::from_utf8_lossy(&buf[..n]);
                    let reply = format!("posix: {}\n", line.trim_end());
                    if client.write_all(reply.as_bytes()).is_err() {
                        closed.push(i - 1);
                    }
                }
            }
        }
        for i in closed {
            clients.swap_remove(i);
        }
        if fds[0].revents != 0 {
            let (client, _) = listener.accept().expect("accept after poll said ready");
            clients.push(client);
        }
    }
}

#[cfg(not(target_family = "wasm"))]
fn main() {}
