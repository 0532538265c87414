//! Many tenants in one host, isolation proven with hostile guests beside a
//! well-behaved neighbour that must answer every request; grouped by what
//! they prove: [`grants`], [`limits`], [`restarts`], [`instances`], and the
//! [`manifest`] as a whole. This file holds what they share.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;
mod grants;
mod instances;
mod limits;
mod manifest;
mod restarts;

use common::*;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};

/// A manifest with the seed as `neighbour` and the hostile guest as
/// `hostile`, whose extra `limits`/keys are `hostile_extra`.
pub fn with_neighbour(hostile_extra: &str) -> String {
    format!(
        r#"
[host]
admin = "127.0.0.1:0"

[[tenant]]
name = "neighbour"
component = "builtin:seed"
listen = ["127.0.0.1:0"]

[[tenant]]
name = "hostile"
component = "{}"
listen = ["127.0.0.1:0"]
{hostile_extra}
"#,
        hostile_guest().display()
    )
}

pub fn order(stream: &mut TcpStream, command: &str) -> String {
    round_trip(stream, format!("{command}\n").as_bytes())
}

/// Sends `command`, which kills the guest, without waiting for a reply.
pub fn fire(addr: SocketAddr, command: &str) {
    let mut stream = connect(addr);
    stream.write_all(format!("{command}\n").as_bytes()).unwrap();
}

pub fn count(status: &serde_json::Value, key: &str) -> u64 {
    status[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key} in {status}"))
}

/// Waits until the hostile tenant has been restarted `n` times and is
/// serving again, then checks it answers.
pub fn wait_restarted(t: &Tenants, n: u64) {
    t.wait_status("hostile", "restarted and running", |s| {
        count(s, "restarts") >= n && s["state"] == "running"
    });
    wait_until_accepting(t.addr("hostile"));
    assert!(order(&mut connect(t.addr("hostile")), "env LISTEN_ADDR").starts_with("ok"));
}

/// Sends `command` and reads one line.
pub fn read_after(stream: &mut TcpStream, command: &str) -> String {
    order(stream, command)
}
