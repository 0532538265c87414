//! A tenant over several instances: each takes clients of its own, one
//! trapping leaves its sibling serving, the count changes live.

// Why two tests do not also run with two instances
// (also_with_two_instances!): with a sibling accepting, a client past the
// cap is reset on accept, not by the reaper of a tenant that is not
// accepting (limits::clients_past_the_cap_...); and one instance exiting
// leaves its sibling serving (restarts::a_tenant_its_policy_...): both are
// proven for two instances here.

use crate::common::*;
use crate::*;
use std::io::Write;
use std::net::TcpStream;

/// The hostile guest as `hostile`, two instances of it, beside the seed.
fn two_hostile(limits: &str) -> Tenants {
    let extra = format!("limits = {{ instances = 2{limits} }}");
    Tenants::start(&with_neighbour(&extra), &["neighbour", "hostile"], &[])
}

/// The hostile guest serves one client at a time: a client it talks to
/// holds one instance, so the next client goes to the other.
fn instance_open(status: &serde_json::Value, index: usize) -> u64 {
    count(&status["instances"][index], "connections_open")
}

#[test]
fn two_instances_serve_one_listener_each_taking_clients_of_its_own() {
    let t = two_hostile("");
    let addr = t.addr("hostile");
    let mut first = connect(addr);
    assert!(order(&mut first, "env LISTEN_ADDR").starts_with("ok"));
    // The first instance is busy with `first` and takes no other client:
    // the second one serves this one.
    let mut second = connect(addr);
    assert!(order(&mut second, "env LISTEN_ADDR").starts_with("ok"));
    assert!(order(&mut first, "env LISTEN_ADDR").starts_with("ok"));
    let status = t.status("hostile");
    assert_eq!(status["instances"].as_array().unwrap().len(), 2, "{status}");
    assert_eq!(instance_open(&status, 0), 1, "{status}");
    assert_eq!(instance_open(&status, 1), 1, "{status}");
    assert_eq!(count(&status, "connections_open"), 2, "{status}");
    let metrics = metrics(t.admin.unwrap());
    for instance in ["0", "1"] {
        let series =
            format!("tcphost_instance_connections_open{{tenant=\"hostile\",index=\"{instance}\"}}");
        assert_eq!(metrics.get(&series), Some(&1.0), "{series}");
    }
}

#[test]
fn one_instance_trapping_leaves_its_sibling_serving_and_alone_is_restarted() {
    let t = two_hostile("");
    let neighbour = Neighbour::start(t.addr("neighbour"));
    let addr = t.addr("hostile");
    let mut held = connect(addr);
    assert!(order(&mut held, "env LISTEN_ADDR").starts_with("ok"));
    let busy = usize::from(instance_open(&t.status("hostile"), 1) == 1);
    let other = 1 - busy;
    // The other instance takes this client, and panics.
    fire(addr, "panic");
    t.wait_status("hostile", "one instance restarted", |s| {
        count(s, "restarts") == 1 && s["instances"][other]["listening"] == true
    });
    // The sibling never stopped: its client is still served, and the
    // tenant runs.
    assert!(order(&mut held, "env LISTEN_ADDR").starts_with("ok"));
    let status = t.status("hostile");
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(count(&status["instances"][busy], "restarts"), 0, "{status}");
    assert_eq!(
        count(&status["instances"][other], "restarts"),
        1,
        "{status}"
    );
    assert_eq!(count(&status, "traps"), 1, "{status}");
    // The restarted instance serves the next client.
    assert!(order(&mut connect(addr), "env LISTEN_ADDR").starts_with("ok"));
    neighbour.assert_all_answered();
}

#[test]
fn a_tenant_of_two_instances_runs_until_the_last_one_stops() {
    let t = two_hostile(", restart = \"never\"");
    let neighbour = Neighbour::start(t.addr("neighbour"));
    let addr = t.addr("hostile");
    let mut held = connect(addr);
    assert!(order(&mut held, "env LISTEN_ADDR").starts_with("ok"));
    fire(addr, "exit 0");
    t.host
        .wait_for_log("of hostile stopped for good; the others serve on");
    let status = t.status("hostile");
    assert_eq!(status["state"], "running", "{status}");
    assert!(order(&mut held, "env LISTEN_ADDR").starts_with("ok"));
    // The last one stops: nobody serves the address any more.
    held.write_all(b"exit 0\n").unwrap();
    t.wait_status("hostile", "stopped", |s| s["state"] == "stopped");
    assert!(
        TcpStream::connect(addr).is_err(),
        "the address still accepts clients nobody serves"
    );
    neighbour.assert_all_answered();
}

#[test]
fn a_reload_changes_the_number_of_instances_live() {
    let one = with_neighbour("");
    let t = Tenants::start(&one, &["neighbour", "hostile"], &[]);
    let neighbour = Neighbour::start(t.addr("neighbour"));
    let addr = t.addr("hostile");
    // One instance by default: a guest keeping state in its memory is one
    // store unless the operator asks for more.
    let status = t.status("hostile");
    assert_eq!(status["instances"].as_array().unwrap().len(), 1, "{status}");
    let mut held = connect(addr);
    assert!(order(&mut held, "env LISTEN_ADDR").starts_with("ok"));
    t.rewrite(&with_neighbour("limits = { instances = 2 }"));
    let (code, body) = t.post("/reload", "");
    assert_eq!(code, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["changed"], serde_json::json!(["hostile"]), "{body}");
    // The old instance keeps its client; two new ones take the next two,
    // on the same address.
    let mut a = connect(addr);
    assert!(order(&mut a, "env LISTEN_ADDR").starts_with("ok"));
    let mut b = connect(addr);
    assert!(order(&mut b, "env LISTEN_ADDR").starts_with("ok"));
    assert!(order(&mut held, "env LISTEN_ADDR").starts_with("ok"));
    let status = t.status("hostile");
    assert_eq!(status["instances"].as_array().unwrap().len(), 2, "{status}");
    assert_eq!(status["generation"], 2, "{status}");
    // And back to one.
    t.rewrite(&one);
    let (code, body) = t.post("/reload", "");
    assert_eq!(code, 200, "{body}");
    let status = t.status("hostile");
    assert_eq!(status["instances"].as_array().unwrap().len(), 1, "{status}");
    assert!(order(&mut connect(addr), "env LISTEN_ADDR").starts_with("ok"));
    neighbour.assert_all_answered();
}
