//! The seed server's behaviour: every read is answered with
//! `rust socket server : N`, N uniform in 0..100, one answer per line.
#![cfg_attr(target_family = "wasm", no_main)]

use guest::Protocol;
use std::net::SocketAddr;

/// Answers every read with a random number, like the Go tutorial server.
struct Seed;

impl Protocol for Seed {
    type Session = ();

    fn connect(&mut self, _peer: SocketAddr) {}

    fn receive(&mut self, _session: &mut (), _data: &[u8], reply: &mut Vec<u8>) {
        let n: u32 = rand::random_range(0..100);
        reply.extend_from_slice(format!("rust socket server : {n}\n").as_bytes());
    }
}

guest::serve!(Seed, Seed);
