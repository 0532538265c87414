//! A plain Rust program using std::net, built for wasm32-wasip2 with no
//! bindings of its own: proof that the host runs any component targeting the
//! world, not only guests built on this repository's event loop.
//!
//! Serves one client at a time and answers each read with `echo: <bytes>`.

use std::io::{Read, Write};
use std::net::TcpListener;

fn main() {
    let addr = std::env::var("LISTEN_ADDR").expect("the host sets LISTEN_ADDR");
    let listener = TcpListener::bind(&addr).expect("binding the granted address");
    eprintln!("std-echo listening on {addr}");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut buf = [0u8; 2048];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut reply = b"echo: ".to_vec();
                    reply.extend_from_slice(&buf[..n]);
                    if stream.write_all(&reply).is_err() {
                        break;
                    }
                }
            }
        }
    }
}
