//! A key-value store kept in guest memory, over a line protocol:
//! `SET key value` → `OK`, `GET key` → `VALUE value` or `NONE`,
//! `DEL key` → `OK` or `NONE`, `COUNT` → `COUNT n`; anything else → `ERROR`.
//! One answer line per command line; a line may arrive in pieces. A `SET`
//! past the store's bounds (entries, bytes) answers `ERROR full`.
#![cfg_attr(target_family = "wasm", no_main)]

use std::collections::HashMap;
use std::net::SocketAddr;

/// Longest command line kept while waiting for its newline.
const MAX_LINE: usize = 4096;

/// Entries kept, at most.
const MAX_ENTRIES: usize = 100_000;

/// Bytes of keys and values kept, at most: together with [`MAX_ENTRIES`],
/// well inside the host's default memory limit (128 MiB), so clients
/// filling the store get `ERROR full` rather than running the guest out of
/// memory (which would lose the whole store).
const MAX_BYTES: usize = 16 * 1024 * 1024;

#[derive(Default)]
struct Kv {
    entries: HashMap<String, String>,
    /// Bytes of keys and values in `entries`.
    bytes: usize,
}

impl Kv {
    fn execute(&mut self, line: &str, reply: &mut Vec<u8>) {
        let mut words = line.splitn(3, ' ');
        let answer = match (words.next(), words.next(), words.next()) {
            (Some("SET"), Some(key), Some(value)) => {
                let replaced = self.entries.get(key).map(|old| key.len() + old.len());
                let bytes = self.bytes - replaced.unwrap_or(0) + key.len() + value.len();
                if bytes > MAX_BYTES || (replaced.is_none() && self.entries.len() >= MAX_ENTRIES) {
                    "ERROR full".to_owned()
                } else {
                    self.entries.insert(key.to_owned(), value.to_owned());
                    self.bytes = bytes;
                    "OK".to_owned()
                }
            }
            (Some("GET"), Some(key), None) => match self.entries.get(key) {
                Some(value) => format!("VALUE {value}"),
                None => "NONE".to_owned(),
            },
            (Some("DEL"), Some(key), None) => match self.entries.remove(key) {
                Some(old) => {
                    self.bytes -= key.len() + old.len();
                    "OK".to_owned()
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(kv: &mut Kv, line: &str) -> String {
        let mut reply = Vec::new();
        kv.execute(line, &mut reply);
        String::from_utf8(reply).unwrap()
    }

    #[test]
    fn a_full_store_refuses_new_bytes_and_takes_them_again_once_freed() {
        let mut kv = Kv::default();
        let value = "v".repeat(4000);
        let mut n = 0;
        while run(&mut kv, &format!("SET k{n} {value}")) == "OK\n" {
            n += 1;
        }
        // Stopped at the byte bound, not before (nor at the entry bound).
        assert!(kv.bytes <= MAX_BYTES);
        assert!(kv.bytes + format!("k{n}").len() + value.len() > MAX_BYTES);
        assert!(n < MAX_ENTRIES);
        assert_eq!(run(&mut kv, &format!("SET k{n} {value}")), "ERROR full\n");
        // Replacing an entry with a shorter value, and deleting, free room.
        assert_eq!(run(&mut kv, "SET k0 short"), "OK\n");
        assert_eq!(run(&mut kv, "DEL k1"), "OK\n");
        assert_eq!(run(&mut kv, &format!("SET k{n} {value}")), "OK\n");
        assert_eq!(run(&mut kv, "GET k0"), "VALUE short\n");
        let kept: usize = kv.entries.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert_eq!(kv.bytes, kept, "the byte count follows the entries");
    }
}
