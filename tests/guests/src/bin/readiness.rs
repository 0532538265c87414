//! A guest that misuses the host's ready sets (`tcphost:server/readiness`)
//! on request: a client sends `check` and gets one line, `ok N checks` or
//! `fail: WHAT`. Serves with the guest library's event loop, which uses a
//! ready set of its own, so the checks also prove that the sets do not
//! disturb one another.
#![cfg_attr(target_family = "wasm", no_main)]

use std::net::SocketAddr;

struct Checks;

impl guest::Protocol for Checks {
    type Session = ();

    fn connect(&mut self, _peer: SocketAddr) {}

    fn receive(&mut self, _session: &mut (), data: &[u8], reply: &mut Vec<u8>) {
        let answer = if data.trim_ascii() == b"check" {
            match run_checks() {
                Ok(n) => format!("ok {n} checks\n"),
                Err(what) => format!("fail: {what}\n"),
            }
        } else {
            "unknown command\n".to_owned()
        };
        reply.extend_from_slice(answer.as_bytes());
    }
}

guest::serve!(Checks, Checks);

#[cfg(target_family = "wasm")]
fn run_checks() -> Result<usize, String> {
    use guest::bindings::tcphost::server::readiness::ReadySet;
    use guest::bindings::wasi::clocks::monotonic_clock::subscribe_duration;

    const MS: u64 = 1_000_000;
    let mut checks = 0;
    let mut check = |ok: bool, what: &str| {
        checks += 1;
        if ok { Ok(()) } else { Err(what.to_owned()) }
    };

    // Tokens and membership.
    let set = ReadySet::new();
    let (a, b) = (
        subscribe_duration(3_600_000 * MS),
        subscribe_duration(3_600_000 * MS),
    );
    check(set.insert(&a, 1), "a first insert is accepted")?;
    check(!set.insert(&b, 1), "a token in use is refused")?;
    check(!set.insert(&a, 2), "a member is refused a second token")?;
    let other = ReadySet::new();
    check(
        !other.insert(&a, 3),
        "a member of one set is refused by another",
    )?;
    check(!set.remove(99), "removing an unknown token says so")?;
    check(set.remove(1), "removing a member says so")?;
    check(!set.remove(1), "a removed member is gone")?;
    check(other.insert(&a, 3), "a removed member may join another set")?;
    drop(other);
    check(set.insert(&a, 4), "a member of a dropped set is free again")?;
    drop(set);

    // Waiting.
    let empty = ReadySet::new();
    check(
        empty.wait(16).is_empty(),
        "waiting on an empty set returns at once",
    )?;
    let set = ReadySet::new();
    let soon = subscribe_duration(MS);
    let late = subscribe_duration(3_600_000 * MS);
    set.insert(&soon, 10);
    set.insert(&late, 11);
    check(
        set.wait(0) == vec![10],
        "max 0 still reports a ready member",
    )?;
    // Level-triggered: still ready, reported again.
    check(
        set.wait(16) == vec![10],
        "a member still ready is reported again",
    )?;
    // A dropped pollable leaves its set.
    drop(soon);
    let next = subscribe_duration(MS);
    set.insert(&next, 12);
    check(
        set.wait(16) == vec![12],
        "a dropped member is never reported",
    )?;
    drop(next);
    drop(late);
    check(
        set.wait(16).is_empty(),
        "a set whose members were all dropped is empty",
    )?;

    // Inserting and removing without ever waiting: the host's bookkeeping
    // stays bounded, and the set still works afterwards.
    let flood = subscribe_duration(0);
    for token in 0..20_000u64 {
        if !set.insert(&flood, token) || !set.remove(token) {
            return Err(format!("insert and remove of token {token} failed"));
        }
    }
    set.insert(&flood, 7);
    check(
        set.wait(16) == vec![7],
        "a set flooded with changes still works",
    )?;
    set.remove(7);
    drop(flood);
    Ok(checks)
}

#[cfg(not(target_family = "wasm"))]
fn run_checks() -> Result<usize, String> {
    Err("not a wasm build".into())
}
