//! Supervision: restart policies, crash loops, a guest trapping during a
//! swap, a failed tenant left as it was by a failed reload.

use crate::common::*;
use crate::*;
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn a_guest_that_panics_on_a_request_is_restarted_and_counted() {
    let t = Tenants::start(
        &with_neighbour("limits = { restart_backoff = \"50ms\" }"),
        &["neighbour", "hostile"],
        &[],
    );
    let neighbour = Neighbour::start(t.addr("neighbour"));
    for round in 1..=2 {
        fire(t.addr("hostile"), "panic");
        wait_restarted(&t, round);
    }
    let status = t.status("hostile");
    assert_eq!(count(&status, "traps"), 2, "{status}");
    assert!(
        status["last_error"].as_str().unwrap().contains("trapped"),
        "{status}"
    );
    neighbour.assert_all_answered();
}

#[test]
fn a_guest_trapping_while_its_swap_is_under_way_is_restarted_and_reported_at_once() {
    let manifest = with_neighbour("limits = { restart_backoff = \"50ms\" }");
    let t = Tenants::start(&manifest, &["neighbour", "hostile"], &[]);
    let neighbour = Neighbour::start(t.addr("neighbour"));
    let started = |log: &str| log.matches("guest started tenant=\"hostile\"").count();
    let before = started(&t.host.log());
    // A reload swaps the tenant to a version that takes 4 s to listen.
    t.rewrite(&manifest.replace(
        "limits = {",
        "env = { LISTEN_AFTER_MS = \"4000\" }\nlimits = {",
    ));
    let reload = {
        let control = t.control.unwrap();
        std::thread::spawn(move || http_post_as(control, "/reload", "", Some(CONTROL_TOKEN)))
    };
    wait_until("the new version started", || {
        started(&t.host.log()) > before
    });
    // Meanwhile the running version traps: it is restarted after its
    // backoff and its error is reported then, not once the swap is over.
    let trapped = Instant::now();
    fire(t.addr("hostile"), "panic");
    t.wait_status("hostile", "restarted", |s| {
        count(s, "restarts") >= 1
            && s["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("trapped"))
    });
    let took = trapped.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "restarted {took:?} after the trap, with the swap still under way"
    );
    assert!(t.host.log().contains("guest 'hostile' trapped"));
    let (code, body) = reload.join().unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(order(&mut connect(t.addr("hostile")), "env LISTEN_AFTER_MS").starts_with("ok 4000"));
    neighbour.assert_all_answered();
}

#[test]
fn a_failed_reload_of_a_failed_tenant_leaves_it_exactly_as_it_was() {
    let manifest = with_neighbour("limits = { restart = \"never\" }");
    let t = Tenants::start(&manifest, &["neighbour", "hostile"], &[]);
    let addr = t.addr("hostile");
    fire(addr, "panic");
    let before = t.wait_status("hostile", "failed", |s| s["state"] == "failed");
    // The reload changes its component (to one that traps at start), its
    // limits and its addresses: it fails, and none of it is applied.
    let trap = test_guest("trap-at-start").display().to_string();
    t.rewrite(
        &manifest
            .replace(&hostile_guest().display().to_string(), &trap)
            .replace(
                "listen = [\"127.0.0.1:0\"]\nlimits = { restart",
                "listen = [\"127.0.0.1:0\", \"127.0.0.3:0\"]\nlimits = { max_connections = 7, restart",
            ),
    );
    let (code, body) = t.post("/reload", "");
    assert_eq!(code, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(report["failed"]["hostile"].is_string(), "{report}");
    let after = t.status("hostile");
    for key in ["component", "listen", "state", "generation"] {
        assert_eq!(after[key], before[key], "{key}: {after}");
    }
    // Its address refuses connections, as it did before the reload.
    assert!(std::net::TcpStream::connect(addr).is_err());
    assert_seed_reply(&round_trip(&mut connect(t.addr("neighbour")), b"fine\n"));
}

#[test]
fn a_crash_looping_tenant_is_marked_failed_and_its_address_refuses() {
    let extra =
        "limits = { restart = \"always\", restart_backoff = \"20ms\", crash_loop_limit = 2 }";
    let t = Tenants::start(&with_neighbour(extra), &["neighbour", "hostile"], &[]);
    let neighbour = Neighbour::start(t.addr("neighbour"));
    let addr = t.addr("hostile");
    for round in 1..=2 {
        fire(addr, "exit 1");
        wait_restarted(&t, round);
    }
    fire(addr, "exit 1");
    let status = t.wait_status("hostile", "failed", |s| s["state"] == "failed");
    assert!(
        status["last_error"]
            .as_str()
            .unwrap()
            .starts_with("crash loop: restarted 2 times"),
        "{status}"
    );
    assert!(
        TcpStream::connect(addr).is_err(),
        "a failed tenant's address refuses connections"
    );
    // The host stays ready: its other tenants serve, and one tenant's
    // failure must not take them out of a load balancer.
    let admin = t.admin.unwrap();
    assert_eq!(
        http_get(admin, "/healthz"),
        (200, "ok\nhostile: failed\n".to_owned())
    );
    assert_eq!(
        http_get(admin, "/healthz/hostile"),
        (503, "failed\n".to_owned())
    );
    assert_eq!(
        http_get(admin, "/healthz/neighbour"),
        (200, "running\n".to_owned())
    );
    assert_eq!(http_get(admin, "/healthz/nobody").0, 404);
    // An operator brings it back by swapping in a component (here the same
    // one): its addresses are listened on again and it serves.
    let component = hostile_guest().display().to_string();
    let (code, body) = t.post("/tenants/hostile/swap", &component);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        http_get(admin, "/healthz/hostile"),
        (200, "running\n".to_owned())
    );
    assert!(order(&mut connect(addr), "env LISTEN_ADDR").starts_with("ok"));
    neighbour.assert_all_answered();
}

#[test]
fn a_tenant_its_policy_leaves_stopped_refuses_connections_while_the_others_serve() {
    // "quits" exits cleanly under on-failure (stopped); "fails" exits with
    // an error under never (failed). Nobody serves their addresses any
    // more, so clients are refused rather than left queued.
    let manifest = format!(
        "{}\n[[tenant]]\nname = \"fails\"\ncomponent = \"{}\"\nlisten = [\"127.0.0.1:0\"]\nlimits = {{ restart = \"never\" }}\n",
        with_neighbour("limits = { restart = \"on-failure\" }"),
        hostile_guest().display()
    );
    let t = Tenants::start(&manifest, &["neighbour", "hostile", "fails"], &[]);
    let neighbour = Neighbour::start(t.addr("neighbour"));
    fire(t.addr("hostile"), "exit 0");
    fire(t.addr("fails"), "exit 1");
    t.wait_status("hostile", "stopped", |s| s["state"] == "stopped");
    let failed = t.wait_status("fails", "failed", |s| s["state"] == "failed");
    assert_eq!(
        failed["last_error"], "guest 'fails' exited with status 1",
        "{failed}"
    );
    for name in ["hostile", "fails"] {
        assert!(
            TcpStream::connect(t.addr(name)).is_err(),
            "{name}'s address still accepts clients nobody serves"
        );
    }
    assert_eq!(count(&t.status("hostile"), "restarts"), 0);
    let admin = t.admin.unwrap();
    assert_eq!(
        http_get(admin, "/healthz"),
        (200, "ok\nfails: failed\nhostile: stopped\n".to_owned())
    );
    // A manifest reload starts both again, on the same addresses.
    let (code, body) = t.post("/reload", "");
    assert_eq!(code, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        report["changed"],
        serde_json::json!(["hostile", "fails"]),
        "{body}"
    );
    assert_eq!(
        report["unchanged"],
        serde_json::json!(["neighbour"]),
        "{body}"
    );
    for name in ["hostile", "fails"] {
        assert!(order(&mut connect(t.addr(name)), "env LISTEN_ADDR").starts_with("ok"));
    }
    assert_eq!(http_get(admin, "/healthz"), (200, "ok\n".to_owned()));
    neighbour.assert_all_answered();
}

also_on_wasi_p3!(
    a_guest_that_panics_on_a_request_is_restarted_and_counted,
    a_crash_looping_tenant_is_marked_failed_and_its_address_refuses,
    a_tenant_its_policy_leaves_stopped_refuses_connections_while_the_others_serve,
);

also_with_two_instances!(a_guest_that_panics_on_a_request_is_restarted_and_counted,);
