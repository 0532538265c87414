//! A key-value store kept in guest memory, over a line protocol:
//! `SET key value` → `OK`, `GET key` → `VALUE value` or `NONE`,
//! `DEL key` → `OK` or `NONE`, `COUNT` → `COUNT n`; anything else → `ERROR`.
//! One answer line per command line; a line may arrive in pieces.
#![cfg_attr(target_family = "wasm", no_main)]

use std::collections::HashMap;
use std::net::SocketAddr;

/// Longest command line kept while waiting for its newline.
const MAX_LINE: usize = 4096;

/// Entries kept, at most, so a client cannot grow the store without bound.
const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
struct Kv {
    entries: HashMap<String, String>,
}

impl Kv {
    fn execute(&mut self, line: &str, reply: &mut Vec<u8>) {
        let mut words = line.splitn(3, ' ');
        let answer = match (words.next(), words.next(), words.next()) {
            (Some("SET"), Some(key), Some(value)) => {
                if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(key) {
                    "ERROR full".to_owned()
                } else {
                    self.entries.insert(key.to_owned(), value.to_owned());
                    "OK".to_owned()
                }
            }
            (Some("GET"), Some(key), None) => match self.entries.get(key) {
                Some(value) => format!("VALUE {value}"),
                None => "NONE".to_owned(),
            },
            (Some("DEL"), Some(key), None) => match self.entries.remove(key) {
                Some(_) => "OK".to_owned(),
                None => "NONE".to_owned(),
            },
            (Some("COUNT"), None, None) => format!("COUNT {}", self.entries.len()),
            _ => "ERROR".to_owned(),
        };
        reply.extend_from_slice(answer.as_bytes());
        reply.push(b'\n');
    }
}

impl guest::Protocol for Kv {
    /// The start of a line whose newline has not arrived yet.
    type Session = Vec<u8>;

    fn connect(&mut self, _peer: SocketAddr) -> Vec<u8> {
        Vec::new()
    }

    fn receive(&mut self, partial: &mut Vec<u8>, data: &[u8], reply: &mut Vec<u8>) {
        for &byte in data {
            if byte == b'\n' {
                let line = String::from_utf8_lossy(partial)
                    .trim_end_matches('\r')
                    .to_owned();
                partial.clear();
                self.execute(&line, reply);
            } else if partial.len() < MAX_LINE {
                partial.push(byte);
            }
        }
    }
}

guest::serve!(Kv, Kv::default());
