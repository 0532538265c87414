//! Live swaps: a tenant's guest replaced by another while clients keep
//! talking to it; no request lost, no connection refused, broken releases
//! refused, old versions drained; and manifest reloads that touch only what
//! changed.

mod common;

use common::*;
use host::tenancy::supervisor::MAX_DRAINING;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A manifest running `component` as tenant "live", with the admin endpoint.
fn live(component: &str, limits: &str) -> String {
    format!(
        "[host]\nadmin = \"127.0.0.1:0\"\n\n[[tenant]]\nname = \"live\"\ncomponent = \"{component}\"\nlisten = [\"127.0.0.1:0\"]\nlimits = {{ {limits} }}\n"
    )
}

fn swap(t: &Tenants, component: &str) -> (u16, String) {
    t.post("/tenants/live/swap", component)
}

/// The reply of a fresh connection to `message`.
fn fresh_reply(addr: SocketAddr, message: &str) -> String {
    round_trip(&mut connect(addr), format!("{message}\n").as_bytes())
}

#[test]
fn ten_swaps_under_load_lose_no_request_and_refuse_no_connection() {
    let echo = repo_guest("echo");
    let upper = repo_guest("upper");
    let t = Tenants::start(
        &live(&echo.display().to_string(), "drain_timeout = \"60s\""),
        &["live"],
        &[],
    );
    let addr = t.addr("live");

    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (stop, requests) = (stop.clone(), requests.clone());
            std::thread::spawn(move || {
                let mut errors = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // Fresh connections keep arriving during every swap.
                    let mut stream = match TcpStream::connect_timeout(&addr, TIMEOUT) {
                        Ok(stream) => stream,
                        Err(e) => {
                            errors.push(format!("connect: {e}"));
                            continue;
                        }
                    };
                    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
                    // The version that accepted a connection answers all of
                    // it: whether it upper-cases, once known.
                    let mut upper: Option<bool> = None;
                    for _ in 0..5 {
                        n += 1;
                        let message = format!("client{c}-request{n}");
                        let reply = round_trip(&mut stream, format!("{message}\n").as_bytes());
                        let this = if reply == format!("{message}\n") {
                            false
                        } else if reply == format!("{}\n", message.to_uppercase()) {
                            true
                        } else {
                            errors.push(format!("{message}: wrong reply {reply:?}"));
                            continue;
                        };
                        if *upper.get_or_insert(this) != this {
                            errors.push(format!("{message}: answered by another version"));
                        }
                        requests.fetch_add(1, Ordering::Relaxed);
                    }
                    // Exactly one reply per request: nothing more arrives.
                    stream.shutdown(Shutdown::Write).unwrap();
                    let mut rest = Vec::new();
                    if let Err(e) = stream.read_to_end(&mut rest) {
                        errors.push(format!("closing: {e}"));
                    }
                    if !rest.is_empty() {
                        errors.push(format!("extra bytes after the replies: {rest:?}"));
                    }
                }
                errors
            })
        })
        .collect();

    // One connection open from before the first swap to after the last:
    // the first version keeps serving it, swap after swap.
    let long_lived = {
        let stop = stop.clone();
        let mut stream = connect(addr);
        assert_eq!(round_trip(&mut stream, b"first\n"), "first\n");
        std::thread::spawn(move || {
            let mut answered = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let reply = round_trip(&mut stream, b"still the first\n");
                assert_eq!(reply, "still the first\n", "after {answered} replies");
                answered += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            answered
        })
    };

    for round in 0..10 {
        let (to, expect) = if round % 2 == 0 {
            (&upper, "HELLO\n")
        } else {
            (&echo, "hello\n")
        };
        let before = requests.load(Ordering::Relaxed);
        let (code, body) = swap(&t, &to.display().to_string());
        assert_eq!(code, 200, "swap {round}: {body}");
        // New connections now reach the new version.
        assert_eq!(fresh_reply(addr, "hello"), expect, "after swap {round}");
        // The load kept flowing through the swap.
        let deadline = Instant::now() + TIMEOUT;
        while requests.load(Ordering::Relaxed) < before + 20 {
            assert!(
                Instant::now() < deadline,
                "the load stalled after swap {round}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert!(long_lived.join().unwrap() > 10);
    let errors: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert_eq!(t.status("live")["generation"], 11);
    assert!(requests.load(Ordering::Relaxed) > 200);
}

#[test]
fn broken_components_are_refused_and_the_old_version_keeps_serving() {
    let t = Tenants::start(&live(&builtin("echo"), ""), &["live"], &[]);
    let addr = t.addr("live");
    let dir = scratch_dir("broken");
    let garbage = dir.join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm\x0d\0\x01\0 certainly not a component").unwrap();
    let wrong_world = dir.join("wrong-world.wasm");
    std::fs::write(&wrong_world, wat::parse_str("(component)").unwrap()).unwrap();
    let cases = [
        (
            garbage.display().to_string(),
            "is not a valid WebAssembly component",
        ),
        (
            wrong_world.display().to_string(),
            "does not export wasi:cli/run",
        ),
        (
            test_guest("trap-at-start").display().to_string(),
            // ("before all its instances listened", with two)
            "failed before",
        ),
        (
            dir.join("missing.wasm").display().to_string(),
            "missing.wasm: No such file or directory",
        ),
        (
            "/no/such/guest.wasm".to_owned(),
            "/no/such/guest.wasm is outside the directories a swap may load from",
        ),
        (
            "builtin:nonesuch".to_owned(),
            "no built-in guest named \"nonesuch\"",
        ),
    ];
    let mut held = connect(addr);
    for (component, why) in cases {
        let (code, body) = swap(&t, &component);
        assert_eq!(code, 422, "{component}: {body}");
        assert!(body.contains(why), "{component}: {body}");
        assert_eq!(fresh_reply(addr, "still echo"), "still echo\n");
        assert_eq!(round_trip(&mut held, b"held\n"), "held\n");
    }
    let status = t.status("live");
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["component"], builtin("echo"), "{status}");
}

#[test]
fn a_new_version_that_fails_just_after_it_listens_leaves_the_old_one_accepting() {
    let t = Tenants::start(&live(&builtin("echo"), ""), &["live"], &[]);
    let addr = t.addr("live");
    assert_eq!(fresh_reply(addr, "hello"), "hello\n");
    let broken = test_guest("trap-after-listen").display().to_string();
    for round in 0..3 {
        let (code, body) = swap(&t, &broken);
        assert_ne!(code, 200, "swap {round} succeeded: {body}");
        // With two instances the first may fail before the second listens:
        // the new version then never took a client.
        let phase = if two_instances() {
            "of the new version failed "
        } else {
            "just after it listened"
        };
        assert!(body.contains(phase), "{body}");
        // The old version took new connections back at once.
        assert_eq!(fresh_reply(addr, "hello"), "hello\n", "after swap {round}");
        let status = t.status("live");
        assert_eq!(status["state"], "running", "{status}");
        assert_eq!(status["generation"], 1, "{status}");
    }
}

#[test]
fn a_swap_that_fails_while_the_first_version_is_still_starting_leaves_that_version_to_serve() {
    // The first version waits 5 s before it listens; meanwhile a swap to a
    // component that traps at start fails. The first version then listens
    // and takes the clients, as if the swap had never been asked for.
    let manifest = format!(
        "[host]\nadmin = \"127.0.0.1:0\"\n\n[[tenant]]\nname = \"live\"\ncomponent = \"{}\"\nlisten = [\"127.0.0.1:0\"]\nenv = {{ LISTEN_AFTER_MS = \"5000\" }}\n",
        hostile_guest().display()
    );
    let t = Tenants::start(&manifest, &[], &[]);
    // The host binds the tenant's address at start-up, before the guest
    // listens: the port it chose is in the line that starts the tenant.
    let started = t.host.wait_for_log("starting tenant tenant=\"live\"");
    let port: u16 = started
        .split("listen=[127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in {started:?}"));
    assert_eq!(t.status("live")["state"], "starting");
    let (code, body) = swap(&t, &test_guest("trap-at-start").display().to_string());
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("failed before"), "{body}");
    t.wait_status("live", "running", |s| s["state"] == "running");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(round_trip(&mut connect(addr), b"env LISTEN_ADDR\n").starts_with("ok"));
    assert_eq!(t.status("live")["generation"], 1);
}

#[test]
fn the_drain_deadline_closes_connections_that_outstay_it() {
    let t = Tenants::start(
        &live(&builtin("echo"), "drain_timeout = \"500ms\""),
        &["live"],
        &[],
    );
    let addr = t.addr("live");
    let mut old = connect(addr);
    assert_eq!(round_trip(&mut old, b"before\n"), "before\n");
    let (code, body) = swap(&t, &builtin("upper"));
    assert_eq!(code, 200, "{body}");
    // The old version still serves its connection until the deadline...
    assert_eq!(round_trip(&mut old, b"during\n"), "during\n");
    assert_eq!(fresh_reply(addr, "new"), "NEW\n");
    // ...then the host closes it.
    let started = Instant::now();
    let mut buf = [0u8; 8];
    match old.read(&mut buf) {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("unexpected {n} bytes"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed only after {:?}",
        started.elapsed()
    );
    t.host
        .wait_for_log("drain deadline of 500ms passed: closing 1 connections of the old version");
}

#[test]
fn a_tenant_with_two_addresses_is_served_on_both_before_and_after_a_swap() {
    let manifest = live(&builtin("echo"), "").replace(
        "listen = [\"127.0.0.1:0\"]",
        "listen = [\"127.0.0.1:0\", \"127.0.0.1:0\"]",
    );
    let t = Tenants::start(&manifest, &["live"], &[]);
    let listening = |generation: u64| {
        let marker = "live: listening on ";
        let line = format!("generation={generation}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = t.host.log();
            // (Each instance of the version logs its own.)
            let mut addrs: Vec<SocketAddr> = log
                .lines()
                .filter(|l| l.contains(marker) && l.contains(&line))
                .map(|l| addr_after(l, marker))
                .collect();
            addrs.sort();
            addrs.dedup();
            if addrs.len() == 2 {
                return addrs;
            }
            assert!(Instant::now() < deadline, "not listening twice:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let addrs = listening(1);
    assert_ne!(addrs[0], addrs[1]);
    for addr in &addrs {
        assert_eq!(fresh_reply(*addr, "hello"), "hello\n", "{addr}");
    }
    let (code, body) = swap(&t, &builtin("upper"));
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        listening(2),
        addrs,
        "the new version listens on the same addresses"
    );
    for addr in &addrs {
        assert_eq!(fresh_reply(*addr, "hello"), "HELLO\n", "{addr}");
    }
}

#[test]
fn swaps_in_quick_succession_keep_at_most_sixteen_old_versions_draining() {
    let t = Tenants::start(
        &live(&builtin("echo"), "drain_timeout = \"1h\""),
        &["live"],
        &[],
    );
    let addr = t.addr("live");
    // A connection held on each version, then a swap away from it.
    let mut held = Vec::new();
    for round in 0..=MAX_DRAINING {
        let mut stream = connect(addr);
        let reply = round_trip(&mut stream, b"hi\n");
        assert!(reply == "hi\n" || reply == "HI\n", "{reply}");
        held.push(stream);
        let to = if round % 2 == 0 {
            builtin("upper")
        } else {
            builtin("echo")
        };
        let (code, body) = swap(&t, &to);
        assert_eq!(code, 200, "{body}");
    }
    t.host
        .wait_for_log("16 replaced versions were draining: dropped the oldest");
    // The oldest version's connection is closed (an end or a reset, within
    // the read timeout `connect` set: a timeout fails); the newer ones
    // still run.
    let mut buf = [0u8; 8];
    match held[0].read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the oldest version's connection was not closed: {e}"),
        Ok(n) => panic!("the oldest version still sent {n} bytes"),
    }
    for stream in &mut held[1..] {
        let reply = round_trip(stream, b"hi\n");
        assert!(reply == "hi\n" || reply == "HI\n", "{reply}");
    }
}

#[test]
fn an_old_version_without_connections_is_dropped_at_once() {
    let t = Tenants::start(
        &live(&builtin("echo"), "drain_timeout = \"1h\""),
        &["live"],
        &[],
    );
    let (code, body) = swap(&t, &builtin("upper"));
    assert_eq!(code, 200, "{body}");
    t.host.wait_for_log("old version drained and dropped");
}

#[test]
fn a_component_named_relative_to_the_working_directory_is_watched_too() {
    let dir = scratch_dir("watched-relative");
    std::fs::copy(repo_guest("echo"), dir.join("live.wasm")).unwrap();
    let host = Host::start_in(&dir, &["live.wasm", "--listen", "127.0.0.1:0"]);
    let marker = "live: listening on ";
    let addr = addr_after(&host.wait_for_log(marker), marker);
    assert_eq!(fresh_reply(addr, "hi"), "hi\n");
    host.wait_for_log("watching for component changes");
    let tmp = dir.join("live.wasm.tmp");
    std::fs::copy(repo_guest("upper"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("live.wasm")).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while fresh_reply(addr, "hi") != "HI\n" {
        assert!(
            Instant::now() < deadline,
            "the file change was not swapped in:\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_changed_component_file_is_swapped_in() {
    let dir = scratch_dir("watched");
    let file = dir.join("live.wasm");
    std::fs::copy(repo_guest("echo"), &file).unwrap();
    let t = Tenants::start(&live(&file.display().to_string(), ""), &["live"], &[]);
    let addr = t.addr("live");
    assert_eq!(fresh_reply(addr, "hi"), "hi\n");
    t.host.wait_for_log("watching for component changes");
    // Replace it the safe way: write beside, then rename over.
    let tmp = dir.join("live.wasm.tmp");
    std::fs::copy(repo_guest("upper"), &tmp).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while fresh_reply(addr, "hi") != "HI\n" {
        assert!(
            Instant::now() < deadline,
            "the file change was not swapped in:\n{}",
            t.host.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A broken write is refused; the running version stays.
    std::fs::write(&tmp, b"half a compon").unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    t.host
        .wait_for_log("component file changed but cannot be used");
    assert_eq!(fresh_reply(addr, "hi"), "HI\n");
}

/// `component` with a custom section carrying `n` appended: the same
/// guest, distinct bytes (each compiled anew).
fn variant(component: &[u8], n: u32) -> Vec<u8> {
    let payload = n.to_le_bytes();
    let name = b"variant";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    let mut bytes = component.to_vec();
    bytes.push(0); // a custom section
    bytes.push(section.len() as u8);
    bytes.extend_from_slice(&section);
    bytes
}

/// Writes `bytes` to `file` the safe way: beside it, then renamed over.
fn replace(file: &std::path::Path, bytes: &[u8]) {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

#[test]
fn a_tenant_rewriting_its_watched_file_is_compiled_at_most_once_per_interval() {
    let dir = scratch_dir("watched-bounded");
    let file = dir.join("live.wasm");
    std::fs::copy(repo_guest("upper"), &file).unwrap();
    let t = Tenants::start(&live(&file.display().to_string(), ""), &["live"], &[]);
    t.host.wait_for_log("watching for component changes");
    let compiled = |log: &str| {
        log.lines()
            .filter(|l| l.contains("compiled component") && l.contains("live.wasm"))
            .count()
    };
    let before = compiled(&t.host.log());
    // A new content every 100 ms for 4 s: each an empty component (quick
    // to compile, then refused: it runs nothing), distinct bytes each time.
    let empty = wat::parse_str("(component)").unwrap();
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(4) {
        replace(&file, &variant(&empty, n));
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    // The last content, a guest again, is still swapped in (a change is
    // delayed, not lost).
    let echo = std::fs::read(repo_guest("echo")).unwrap();
    replace(&file, &variant(&echo, n));
    wait_until("the last content swapped in", || {
        fresh_reply(t.addr("live"), "hi") == "hi\n"
    });
    let seconds = started.elapsed().as_secs_f64();
    let compiles = compiled(&t.host.log()) - before;
    let allowed = (seconds / 2.0).ceil() as usize + 1;
    assert!(
        compiles <= allowed,
        "{compiles} compiles for {n} writes in {seconds:.1} s (at most {allowed})"
    );
}

#[test]
fn a_reload_is_not_undone_by_the_file_watcher_acting_on_an_earlier_write() {
    let dir = scratch_dir("watched-reload");
    let file = dir.join("live.wasm");
    let upper = std::fs::read(repo_guest("upper")).unwrap();
    std::fs::copy(repo_guest("echo"), &file).unwrap();
    let manifest = live(&file.display().to_string(), "");
    let t = Tenants::start(&manifest, &["live"], &[]);
    t.host.wait_for_log("watching for component changes");
    // The tenant's file changes, and while the watcher is still taking
    // that in, the operator reloads the tenant onto a built-in guest.
    replace(&file, &variant(&upper, 1));
    std::thread::sleep(Duration::from_millis(300));
    t.rewrite(&manifest.replace(&file.display().to_string(), "builtin:seed"));
    let (code, body) = t.post("/reload", "");
    assert_eq!(code, 200, "{body}");
    // Whatever the watcher does with the write, the operator's reload
    // stands: it decides against what runs, under the same lock.
    std::thread::sleep(control_interval());
    assert_eq!(t.status("live")["component"], "builtin:seed");
    assert_seed_reply(&fresh_reply(t.addr("live"), "hi"));
}

/// Longer than the watcher's settle time and interval between two
/// compiles of one file: after it, a change seen has been acted on.
fn control_interval() -> Duration {
    Duration::from_millis(3500)
}

#[test]
fn a_reload_adds_removes_and_changes_tenants_and_leaves_the_rest_alone() {
    let tenant = |name: &str, component: &str| {
        format!(
            "[[tenant]]\nname = \"{name}\"\ncomponent = \"{component}\"\nlisten = [\"127.0.0.1:0\"]\n\n"
        )
    };
    let head = "[host]\nadmin = \"127.0.0.1:0\"\n\n";
    let before = format!(
        "{head}{}{}{}",
        tenant("keep", "builtin:echo"),
        tenant("gone", "builtin:echo"),
        tenant("change", "builtin:echo")
    );
    let t = Tenants::start(&before, &["keep", "gone", "change"], &[]);
    let mut kept = connect(t.addr("keep"));
    assert_eq!(round_trip(&mut kept, b"one\n"), "one\n");
    // "gone" has a replaced version still draining a connection when it is
    // removed: that version must not keep its address accepting.
    let mut draining = connect(t.addr("gone"));
    assert_eq!(round_trip(&mut draining, b"old\n"), "old\n");
    let (code, body) = t.post("/tenants/gone/swap", "builtin:upper");
    assert_eq!(code, 200, "{body}");
    // And a connection on its current version, which drains on removal.
    let mut current = connect(t.addr("gone"));
    assert_eq!(round_trip(&mut current, b"new\n"), "NEW\n");

    // An invalid manifest changes nothing.
    t.rewrite(&format!("{before}bogus = 1\n"));
    let (code, body) = t.post("/reload", "");
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("unknown field `bogus`"), "{body}");

    let accepted = "tcphost_host_connections_accepted_total";
    let before_reload = metric(t.admin.unwrap(), accepted);
    let after = format!(
        "{head}{}{}{}",
        tenant("keep", "builtin:echo"),
        tenant("change", "builtin:upper"),
        tenant("new", "builtin:echo")
    );
    t.rewrite(&after);
    t.host.signal("HUP");
    t.host.wait_for_log("SIGHUP: manifest reloaded");
    let new = addr_after(
        &t.host.wait_for_log("new: listening on "),
        "new: listening on ",
    );
    assert_eq!(fresh_reply(new, "added"), "added\n");
    assert_eq!(fresh_reply(t.addr("change"), "changed"), "CHANGED\n");
    assert!(
        TcpStream::connect(t.addr("gone")).is_err(),
        "a removed tenant's address refuses"
    );
    // Its open connections run on until they close.
    assert_eq!(round_trip(&mut current, b"still\n"), "STILL\n");
    assert_eq!(round_trip(&mut draining, b"still\n"), "still\n");
    drop((current, draining));
    // The unaffected tenant: same version, same connection.
    assert_eq!(round_trip(&mut kept, b"two\n"), "two\n");
    assert_eq!(t.status("keep")["generation"], 1);
    assert_eq!(t.status("change")["generation"], 2);
    let (_, status) = http_get(t.admin.unwrap(), "/status");
    assert!(!status.contains("\"gone\""), "{status}");
    // The removed tenant's counts stay in the host-wide totals.
    assert!(
        metric(t.admin.unwrap(), accepted) >= before_reload + 2.0,
        "{before_reload}"
    );
}

#[test]
fn a_reload_past_what_the_pooling_allocator_was_sized_for_changes_nothing() {
    let manifest =
        live("builtin:echo", "").replace("[host]\n", "[host]\npooling_allocator = true\n");
    let t = Tenants::start(&manifest, &["live"], &[]);
    let two = format!(
        "{manifest}\n[[tenant]]\nname = \"more\"\ncomponent = \"builtin:echo\"\nlisten = [\"127.0.0.1:0\"]\n"
    );
    t.rewrite(&two);
    let (code, body) = t.post("/reload", "");
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains(
            "the pooling allocator was sized at start for 1 guest instances, and the manifest's tenants run 2"
        ),
        "{body}"
    );
    let bigger = manifest.replace("limits = {  }", "limits = { max_memory = \"1 GiB\" }");
    t.rewrite(&bigger);
    let (code, body) = t.post("/reload", "");
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("max_memory 1073741824 is above"), "{body}");
    // More instances of the one tenant need more of the pool too.
    let wider = manifest.replace("limits = {  }", "limits = { instances = 2 }");
    t.rewrite(&wider);
    let (code, body) = t.post("/reload", "");
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("sized at start for 1 guest instances, and the manifest's tenants run 2"),
        "{body}"
    );
    assert_eq!(fresh_reply(t.addr("live"), "still"), "still\n");
}

#[test]
fn a_reload_says_which_host_settings_need_a_restart() {
    let manifest = live("builtin:echo", "");
    let t = Tenants::start(&manifest, &["live"], &[]);
    let changed = manifest.replace("[host]\n", "[host]\nguest_threads = 1\n");
    t.rewrite(&changed);
    let (code, body) = t.post("/reload", "");
    assert_eq!(code, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        report["need_restart"],
        serde_json::json!(["host.guest_threads"]),
        "{body}"
    );
    assert_eq!(report["unchanged"], serde_json::json!(["live"]), "{body}");
    t.host
        .wait_for_log("host.guest_threads changed, which takes effect only when the host restarts");
}

#[test]
fn the_kv_guest_keeps_state_across_connections_until_swapped_out() {
    let t = Tenants::start(&live("builtin:kv", ""), &["live"], &[]);
    let addr = t.addr("live");
    let mut a = connect(addr);
    assert_eq!(round_trip(&mut a, b"SET colour blue\n"), "OK\n");
    // A command may arrive in pieces.
    a.write_all(b"SET size ").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(round_trip(&mut a, b"large\n"), "OK\n");
    let mut b = connect(addr);
    assert_eq!(round_trip(&mut b, b"GET colour\n"), "VALUE blue\n");
    assert_eq!(round_trip(&mut b, b"COUNT\n"), "COUNT 2\n");
    assert_eq!(round_trip(&mut b, b"DEL size\n"), "OK\n");
    assert_eq!(round_trip(&mut b, b"GET size\n"), "NONE\n");
    assert_eq!(round_trip(&mut b, b"FLY away\n"), "ERROR\n");
    // A new version starts with an empty store: state lives in the guest.
    assert_eq!(swap(&t, "builtin:kv").0, 200);
    assert_eq!(fresh_reply(addr, "GET colour"), "NONE\n");
}

also_on_wasi_p3!(
    ten_swaps_under_load_lose_no_request_and_refuse_no_connection,
    broken_components_are_refused_and_the_old_version_keeps_serving,
    a_new_version_that_fails_just_after_it_listens_leaves_the_old_one_accepting,
    the_drain_deadline_closes_connections_that_outstay_it,
    a_tenant_with_two_addresses_is_served_on_both_before_and_after_a_swap,
    swaps_in_quick_succession_keep_at_most_sixteen_old_versions_draining,
    an_old_version_without_connections_is_dropped_at_once,
    a_changed_component_file_is_swapped_in,
);

/// A tenant swapped from a WASI 0.2 guest to a WASI 0.3 one and back,
/// under a client that keeps its connection: nothing refused, each
/// version answers in its own way.
#[test]
fn a_tenant_swaps_between_wasi_versions_without_refusing_a_connection() {
    let t = Tenants::start(&live("builtin:echo", ""), &["live"], &[]);
    let addr = t.addr("live");
    let mut kept = connect(addr);
    assert_eq!(round_trip(&mut kept, b"hi\n"), "hi\n");
    let (code, body) = swap(&t, "builtin:upper@p3");
    assert_eq!(code, 200, "{body}");
    assert_eq!(fresh_reply(addr, "hello"), "HELLO\n");
    // The old version keeps the connection it had.
    assert_eq!(round_trip(&mut kept, b"still\n"), "still\n");
    let (code, body) = swap(&t, "builtin:echo@p2");
    assert_eq!(code, 200, "{body}");
    assert_eq!(fresh_reply(addr, "back"), "back\n");
}

also_with_two_instances!(
    ten_swaps_under_load_lose_no_request_and_refuse_no_connection,
    broken_components_are_refused_and_the_old_version_keeps_serving,
    a_new_version_that_fails_just_after_it_listens_leaves_the_old_one_accepting,
    the_drain_deadline_closes_connections_that_outstay_it,
    a_tenant_with_two_addresses_is_served_on_both_before_and_after_a_swap,
    an_old_version_without_connections_is_dropped_at_once,
    a_changed_component_file_is_swapped_in,
    a_reload_adds_removes_and_changes_tenants_and_leaves_the_rest_alone,
    a_tenant_swaps_between_wasi_versions_without_refusing_a_connection,
);
