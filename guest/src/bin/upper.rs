//! Upper-case: answers every read with the same bytes, ASCII letters in
//! upper case.
#![cfg_attr(target_family = "wasm", no_main)]

use std::net::SocketAddr;

struct Upper;

impl guest::Protocol for Upper {
    type Session = ();

    fn connect(&mut self, _peer: SocketAddr) {}

    fn receive(&mut self, _session: &mut (), data: &[u8], reply: &mut Vec<u8>) {
        reply.extend(data.iter().map(u8::to_ascii_uppercase));
    }
}

guest::serve!(Upper, Upper);
