//! Grants: a guest binds and listens only where granted, connects out
//! only where granted (never to the host's own endpoints), sees its own
//! environment, and makes socket pairs on a private loopback nothing
//! else reaches.

use crate::common::*;
use crate::*;
use std::net::{SocketAddr, TcpListener};

#[test]
fn a_guest_cannot_bind_another_tenants_address() {
    let t = Tenants::start(&with_neighbour(""), &["neighbour", "hostile"], &[]);
    let neighbour = Neighbour::start(t.addr("neighbour"));
    let theirs = t.addr("neighbour");
    let before = count(&t.status("hostile"), "capability_refusals");
    let reply = order(&mut connect(t.addr("hostile")), &format!("bind {theirs}"));
    assert!(reply.starts_with("denied"), "{reply}");
    t.host
        .wait_for_log(&format!("refused: bind/listen on {theirs} is not granted"));
    // Counted, once: a runtime asking for its directories is no refusal.
    assert_eq!(
        count(&t.status("hostile"), "capability_refusals"),
        before + 1
    );
    assert_eq!(t.host.log().matches("refused: bind/listen").count(), 1);
    neighbour.assert_all_answered();
}

#[test]
fn a_guest_connects_out_only_where_granted() {
    let granted = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    other.set_nonblocking(true).unwrap();
    let (granted_addr, other_addr) = (granted.local_addr().unwrap(), other.local_addr().unwrap());
    let t = Tenants::start(
        &with_neighbour(&format!("connect = [\"{granted_addr}\"]")),
        &["neighbour", "hostile"],
        &[],
    );
    let neighbour = Neighbour::start(t.addr("neighbour"));
    let mut control = connect(t.addr("hostile"));
    assert_eq!(
        order(&mut control, &format!("connect {granted_addr}")),
        "ok connected\n"
    );
    granted.set_nonblocking(false).unwrap();
    assert!(granted.accept().is_ok(), "the granted connection arrived");
    let reply = order(&mut control, &format!("connect {other_addr}"));
    assert!(reply.starts_with("denied"), "{reply}");
    t.host.wait_for_log(&format!(
        "refused: outbound connection to {other_addr} is not granted"
    ));
    assert!(other.accept().is_err(), "the ungranted connection arrived");
    neighbour.assert_all_answered();
}

#[test]
fn no_connect_grant_reaches_the_admin_endpoint() {
    // The admin port is chosen at start (port 0), so the first manifest
    // cannot name it; a reload that grants it to the hostile tenant is
    // refused, as the endpoints are bound by then (the grant's own check
    // at connect time is policy's unit test).
    let t = Tenants::start(&with_neighbour(""), &["neighbour", "hostile"], &[]);
    let neighbour = Neighbour::start(t.addr("neighbour"));
    let admin = t.admin.unwrap();
    let manifest = t.dir.join("tenants.toml");
    std::fs::write(
        &manifest,
        with_neighbour(&format!("connect = [\"{admin}\"]")),
    )
    .unwrap();
    let (code, body) = t.post("/reload", "");
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains(&format!(
            "tenant 'hostile': connect: {admin} is one of the host's own endpoints"
        )),
        "{body}"
    );
    let reply = order(&mut connect(t.addr("hostile")), &format!("connect {admin}"));
    assert!(reply.starts_with("denied"), "{reply}");
    t.host.wait_for_log(&format!(
        "refused: outbound connection to {admin} is not granted"
    ));
    neighbour.assert_all_answered();
}

#[test]
fn the_guest_gets_its_environment_and_all_its_addresses() {
    let manifest = format!(
        "[[tenant]]\nname = \"hostile\"\ncomponent = \"{}\"\nlisten = [\"127.0.0.1:0\", \"127.0.0.1:0\"]\nenv = {{ GREETING = \"hello\" }}\n",
        hostile_guest().display()
    );
    let t = Tenants::start(&manifest, &["hostile"], &[]);
    let mut control = connect(t.addr("hostile"));
    assert_eq!(order(&mut control, "env GREETING"), "ok hello\n");
    let all = order(&mut control, "env LISTEN_ADDRS");
    let addrs: Vec<SocketAddr> = all
        .strip_prefix("ok ")
        .and_then(|v| v.trim().split(',').map(|a| a.parse().ok()).collect())
        .unwrap_or_else(|| panic!("{all}"));
    assert_eq!(addrs.len(), 2);
    assert_eq!(addrs[0], t.addr("hostile"));
    assert_ne!(addrs[0], addrs[1], "each port 0 gets its own free port");
}

/// A guest may make a pair of connected sockets the way CPython's
/// `socket.socketpair()` does on WASI (listen on 127.0.0.1:0, connect,
/// accept): on a private loopback of its own instance. No kernel port is
/// taken, nothing outside the instance reaches it, it is bounded per
/// instance and counted, and its neighbours are unaffected.
#[test]
fn a_guest_makes_socketpairs_on_a_private_loopback_nothing_else_reaches() {
    socketpairs_on_a_private_loopback();
}

/// The same on WASI 0.3: one socket core serves both.
#[test]
fn wasi_p3_a_guest_makes_socketpairs_on_a_private_loopback_nothing_else_reaches() {
    on_wasi_p3(socketpairs_on_a_private_loopback);
}

/// Whether process `pid` holds a TCP socket listening on `port`.
fn listens_on(pid: u32, port: u16) -> bool {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let port = format!("{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                f.len() > 9
                    && f[3] == "0A"
                    && f[1].rsplit_once(':').map(|(_, p)| p) == Some(port.as_str())
                    && inodes.iter().any(|i| i == f[9])
            })
    })
}

fn socketpairs_on_a_private_loopback() {
    let manifest = format!(
        "{}\n[[tenant]]\nname = \"other\"\ncomponent = \"{}\"\nlisten = [\"127.0.0.1:0\"]\n",
        with_neighbour(""),
        hostile_guest().display()
    );
    let t = Tenants::start(&manifest, &["neighbour", "hostile", "other"], &[]);
    let admin = t.admin.unwrap();
    let neighbour = Neighbour::start(t.addr("neighbour"));
    let mut hostile = connect(t.addr("hostile"));
    let reply = order(&mut hostile, "socketpair");
    let mut addrs = reply
        .strip_prefix("ok ")
        .unwrap_or_else(|| panic!("{reply}"))
        .split_whitespace()
        .map(|a| a.parse::<SocketAddr>().expect(&reply));
    let (listener, client) = (addrs.next().unwrap(), addrs.next().unwrap());
    assert!(
        listener.ip().is_loopback() && client.ip().is_loopback(),
        "{reply}"
    );
    let open = "tcphost_private_connections_open{tenant=\"hostile\"}";
    assert_eq!(metric(admin, open), 1.0);

    // Not a port of the host's loopback: the host listens on no such
    // port (another process may, by chance: it is not the guest's).
    assert!(!listens_on(t.host.pid(), listener.port()), "{reply}");
    // Another tenant's guest is refused, as for any address not granted.
    let mut other = connect(t.addr("other"));
    let refused = order(&mut other, &format!("connect {listener}"));
    assert!(refused.starts_with("denied"), "{refused}");
    // The same instance reaches it.
    assert_eq!(
        order(&mut hostile, &format!("connect {listener}")),
        "ok connected\n"
    );
    assert_eq!(metric(admin, open), 2.0);
    // Another instance of the same tenant does not: a new version,
    // swapped in while this one drains (it keeps serving `hostile`).
    let (code, body) = t.post(
        "/tenants/hostile/swap",
        &hostile_guest().display().to_string(),
    );
    assert_eq!(code, 200, "{body}");
    let mut next = connect(t.addr("hostile"));
    let refused = order(&mut next, &format!("connect {listener}"));
    assert!(refused.starts_with("denied"), "{refused}");
    drop(next);

    // Bounded per instance: 64 private ports. The listener, the pair and
    // the connection above (its client gone, its other end still queued)
    // hold three; each further pair holds one once its listener is closed
    // again, and two while it is made: 60 more.
    let reply = order(&mut hostile, "socketpairs 100");
    assert!(reply.starts_with("ok 60 pairs, then"), "{reply}");
    assert_eq!(metric(admin, open), 62.0);
    t.host.wait_for_log("private loopback ports, its limit");

    // Ended with the instance (drained once its client goes).
    drop(hostile);
    wait_metric(admin, open, |v| v == 0.0);
    neighbour.assert_all_answered();
}

also_on_wasi_p3!(
    a_guest_cannot_bind_another_tenants_address,
    a_guest_connects_out_only_where_granted,
    no_connect_grant_reaches_the_admin_endpoint,
    the_guest_gets_its_environment_and_all_its_addresses,
);

also_with_two_instances!(
    a_guest_cannot_bind_another_tenants_address,
    a_guest_connects_out_only_where_granted,
    no_connect_grant_reaches_the_admin_endpoint,
);
