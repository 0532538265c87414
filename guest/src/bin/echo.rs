//! Echo: answers every read with the same bytes.
#![cfg_attr(target_family = "wasm", no_main)]

use std::net::SocketAddr;

struct Echo;

impl guest::Protocol for Echo {
    type Session = ();

    fn connect(&mut self, _peer: SocketAddr) {}

    fn receive(&mut self, _session: &mut (), data: &[u8], reply: &mut Vec<u8>) {
        reply.extend_from_slice(data);
    }
}

guest::serve!(Echo, Echo);
