//! The manifest as a whole: a hundred tenants at once, the admin status,
//! the compile cache, invalid manifests and components, the metrics.

use crate::common::*;
use crate::*;
use std::net::TcpStream;

#[test]
fn a_hundred_tenants_from_one_manifest_serve_concurrently() {
    let mut manifest = String::new();
    let names: Vec<String> = (0..100).map(|i| format!("t{i:03}")).collect();
    for name in &names {
        manifest += &format!(
            "[[tenant]]\nname = \"{name}\"\ncomponent = \"builtin:seed\"\nlisten = [\"127.0.0.1:0\"]\n\n"
        );
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let t = Tenants::start(&manifest, &refs, &[]);
    // Every tenant holds a connection at once, then each answers.
    let mut streams: Vec<TcpStream> = refs.iter().map(|n| connect(t.addr(n))).collect();
    for stream in &mut streams {
        assert_seed_reply(&round_trip(stream, b"hello\n"));
    }
    // One component, compiled once for all hundred.
    assert_eq!(
        t.host.log().matches("compiled component").count(),
        1,
        "{}",
        t.host.log()
    );
}

#[test]
fn the_admin_status_shows_every_tenant() {
    let t = Tenants::start(&with_neighbour(""), &["neighbour", "hostile"], &[]);
    let _open = connect(t.addr("neighbour"));
    let (code, body) = http_get(t.admin.unwrap(), "/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let tenants = status["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), 2);
    for tenant in tenants {
        assert_eq!(tenant["state"], "running", "{tenant}");
        assert_eq!(tenant["restarts"], 0, "{tenant}");
    }
    t.wait_status("neighbour", "one open connection", |s| {
        count(s, "connections_open") == 1
    });
    assert_eq!(
        http_get(t.admin.unwrap(), "/healthz"),
        (200, "ok\n".to_owned())
    );
    assert_eq!(http_get(t.admin.unwrap(), "/status/nobody").0, 404);
}

#[test]
fn a_warm_cache_reaches_listening_without_compiling() {
    let cache = scratch_dir("cache");
    let cache_arg = cache.to_str().unwrap();
    let manifest =
        "[[tenant]]\nname = \"solo\"\ncomponent = \"builtin:seed\"\nlisten = [\"127.0.0.1:0\"]\n";
    let cold = Tenants::start(manifest, &["solo"], &["--cache-dir", cache_arg]);
    cold.host.wait_for_log("compiled component");
    drop(cold);
    let warm = Tenants::start(manifest, &["solo"], &["--cache-dir", cache_arg]);
    warm.host
        .wait_for_log("loaded compiled component from the cache");
    assert!(
        !warm.host.log().contains("compiled component guest"),
        "{}",
        warm.host.log()
    );
    assert_seed_reply(&round_trip(&mut connect(warm.addr("solo")), b"warm?\n"));
}

#[test]
fn an_invalid_manifest_starts_nothing() {
    let dir = scratch_dir("invalid");
    let path = dir.join("tenants.toml");
    std::fs::write(&path, "[[tenant]]\nname = \"a\"\ncomponent = \"builtin:seed\"\nlisten = [\"127.0.0.1:0\"]\nlimits = { max_memory = \"lots\" }\n").unwrap();
    let (status, log) = run_host(&[std::ffi::OsStr::new("--config"), path.as_os_str()]);
    assert_eq!(status.code(), Some(78));
    assert_clean_error(
        &log,
        &format!(
            "error: {}:5: tenant.max_memory: \"lots\" is not a size",
            path.display()
        ),
    );
    assert!(!log.contains("listening on"), "{log}");
}

#[test]
fn an_invalid_component_in_a_manifest_names_its_line() {
    let dir = scratch_dir("badcomponent");
    std::fs::write(dir.join("junk.wasm"), b"junk").unwrap();
    let path = dir.join("tenants.toml");
    std::fs::write(
        &path,
        "[[tenant]]\nname = \"a\"\nlisten = [\"127.0.0.1:0\"]\ncomponent = \"junk.wasm\"\n",
    )
    .unwrap();
    let (status, log) = run_host(&[std::ffi::OsStr::new("--config"), path.as_os_str()]);
    assert_eq!(status.code(), Some(78));
    assert_clean_error(
        &log,
        &format!("error: {}:4: tenant.component: ", path.display()),
    );
    assert!(log.contains("is not a WebAssembly file"), "{log}");
}

#[test]
fn metrics_count_each_tenants_traffic_refusals_traps_and_restarts() {
    let t = Tenants::start(
        &with_neighbour("limits = { restart_backoff = \"50ms\" }"),
        &["neighbour", "hostile"],
        &[],
    );
    let admin = t.admin.unwrap();
    let mut client = connect(t.addr("neighbour"));
    let mut replied = 0;
    for _ in 0..3 {
        let reply = round_trip(&mut client, b"12345\n");
        assert_seed_reply(&reply);
        replied += reply.len();
    }
    let mut hostile = connect(t.addr("hostile"));
    let theirs = t.addr("neighbour");
    assert!(order(&mut hostile, &format!("bind {theirs}")).starts_with("denied"));
    assert!(order(&mut hostile, "udp 127.0.0.1:9").starts_with("denied"));
    assert!(order(&mut hostile, "resolve example.com").starts_with("denied"));
    drop(hostile);
    fire(t.addr("hostile"), "panic");
    wait_restarted(&t, 1);

    let m = metrics(admin);
    let get = |series: &str| -> f64 {
        *m.get(series)
            .unwrap_or_else(|| panic!("no {series} in {m:?}"))
    };
    let n = "tenant=\"neighbour\"";
    let h = "tenant=\"hostile\"";
    assert_eq!(get(&format!("tcphost_received_bytes_total{{{n}}}")), 18.0);
    assert_eq!(
        get(&format!("tcphost_sent_bytes_total{{{n}}}")),
        replied as f64
    );
    assert_eq!(get(&format!("tcphost_connections_open{{{n}}}")), 1.0);
    assert!(get(&format!("tcphost_connections_accepted_total{{{h}}}")) >= 3.0);
    for kind in ["tcp-bind", "udp", "dns"] {
        assert_eq!(
            get(&format!(
                "tcphost_capability_refusals_total{{{h},kind=\"{kind}\"}}"
            )),
            1.0,
            "{kind}"
        );
    }
    // Counted apart: std's runtime asked at each start, the code never did
    // (the 0.3 guest never touches std's files, so its C library never
    // asks).
    if !wasi_p3() {
        assert!(get(&format!("tcphost_guest_preopen_queries_total{{{h}}}")) >= 1.0);
    }
    assert_eq!(get(&format!("tcphost_guest_traps_total{{{h}}}")), 1.0);
    // The trapped instance's calls into the host were added when it ended
    // (instances add theirs in batches).
    assert!(get(&format!("tcphost_guest_host_crossings_total{{{h}}}")) >= 10.0);
    assert_eq!(get(&format!("tcphost_guest_restarts_total{{{h}}}")), 1.0);
    assert!(get(&format!("tcphost_memory_bytes{{{h}}}")) > 0.0);
    assert_eq!(
        get(&format!("tcphost_tenant_state{{{h},state=\"running\"}}")),
        1.0
    );
    assert_eq!(get("tcphost_host_tenants{state=\"running\"}"), 2.0);
    let by_kind: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("tcphost_capability_refusals_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(get("tcphost_host_capability_refusals_total"), by_kind);
    for kind in ["tcp-bind", "tcp-connect", "udp", "dns"] {
        let per_tenant: f64 = m
            .iter()
            .filter(|(k, _)| {
                k.starts_with("tcphost_capability_refusals_total{")
                    && k.contains(&format!("kind=\"{kind}\""))
            })
            .map(|(_, v)| v)
            .sum();
        assert_eq!(
            get(&format!(
                "tcphost_host_capability_refusals_by_kind_total{{kind=\"{kind}\"}}"
            )),
            per_tenant,
            "{kind}"
        );
    }
    assert!(get("tcphost_host_received_bytes_total") >= 18.0);
    assert!(get("tcphost_process_open_fds") > 0.0);
}

also_on_wasi_p3!(metrics_count_each_tenants_traffic_refusals_traps_and_restarts,);
