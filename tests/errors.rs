//! Bad input gets one clear error line and a non-zero exit: never a panic,
//! a Rust backtrace or a hang.

mod common;

use common::*;
use std::net::TcpListener;
use std::path::PathBuf;

/// Writes `bytes` to a fresh file named `name` and returns its path.
fn fixture(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch_dir("fixture").join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Runs the host with `guest` on a free port and checks it fails with `expected`.
fn assert_rejected(guest: &std::path::Path, expected: &str) {
    let (status, log) = run_host(&[
        guest.as_os_str(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
    ]);
    assert_eq!(status.code(), Some(78), "{log}");
    assert_clean_error(&log, expected);
}

#[test]
fn a_missing_file_is_named() {
    assert_rejected(
        std::path::Path::new("/nonexistent/guest.wasm"),
        "error: cannot read /nonexistent/guest.wasm: No such file or directory",
    );
}

#[test]
fn a_directory_is_not_a_guest() {
    let dir = std::env::temp_dir();
    assert_rejected(&dir, &format!("error: cannot read {}", dir.display()));
}

#[test]
fn a_fifo_is_refused_without_blocking_on_it() {
    let dir = scratch_dir("fifo");
    let fifo = dir.join("guest.wasm");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    assert_rejected(
        &fifo,
        &format!(
            "error: cannot read {}: not a regular file (a FIFO, socket or device)",
            fifo.display()
        ),
    );
}

#[test]
fn a_file_that_is_not_wasm_is_rejected() {
    let path = fixture("notes.wasm", b"this is a text file\n");
    assert_rejected(&path, "is not a WebAssembly file");
}

#[test]
fn an_empty_file_is_rejected() {
    let path = fixture("empty.wasm", b"");
    assert_rejected(&path, "is not a WebAssembly file");
}

#[test]
fn a_core_module_is_rejected_with_how_to_build_a_component() {
    let module = wat::parse_str("(module (func (export \"_start\")))").unwrap();
    let path = fixture("core.wasm", &module);
    assert_rejected(
        &path,
        "is a core WebAssembly module, not a component: build the guest for the wasm32-wasip2 target",
    );
}

#[test]
fn a_corrupt_component_is_rejected() {
    let mut bytes = wat::parse_str("(component)").unwrap();
    bytes.extend_from_slice(b"\x07garbage that is not a section");
    let path = fixture("corrupt.wasm", &bytes);
    assert_rejected(&path, "is not a valid WebAssembly component:");
}

#[test]
fn missing_imports_are_all_named() {
    let component = wat::parse_str(
        r#"(component
            (import "acme:db/query@1.0.0" (instance))
            (import "wasi:cli/environment@0.3.1" (instance))
            (import "tcphost:server/readiness@0.2.0" (instance))
            (import "wasi:cli/stdout@0.2.6" (instance))
            (import "tcphost:server/readiness@0.1.0" (instance))
        )"#,
    )
    .unwrap();
    let path = fixture("imports.wasm", &component);
    let (status, log) = run_host(&[
        path.as_os_str(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
    ]);
    assert_eq!(status.code(), Some(78));
    assert_clean_error(
        &log,
        "needs imports this host does not provide: acme:db/query@1.0.0, wasi:cli/environment@0.3.1, \
         tcphost:server/readiness@0.2.0;",
    );
    assert!(
        !log.contains("wasi:cli/stdout@0.2.6,"),
        "an older WASI 0.2 import is provided: {log}"
    );
    assert!(
        !log.contains("readiness@0.1.0,"),
        "the host's own extension is provided: {log}"
    );
    // Refused from its import section, before any compile.
    assert!(!log.contains("compiled component"), "{log}");
}

#[test]
fn a_manifest_address_already_in_use_names_the_tenant_and_the_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (status, log, manifest) = run_manifest(
        "in-use",
        &format!("[[tenant]]\nname = \"t\"\ncomponent = \"builtin:seed\"\nlisten = [\"{addr}\"]\n"),
    );
    assert_eq!(status.code(), Some(69), "{log}");
    assert_clean_error(
        &log,
        &format!(
            "error: tenant 't': listen address {addr} is already in use: stop what is using it or \
             change the tenant's listen at {}:4",
            manifest.display()
        ),
    );
}

#[test]
fn a_component_without_wasi_cli_run_is_rejected() {
    let path = fixture("no-run.wasm", &wat::parse_str("(component)").unwrap());
    assert_rejected(&path, "does not export wasi:cli/run");
}

#[test]
fn an_invalid_listen_address_is_rejected() {
    let (status, log) = run_host(&["--listen", "localhost"]);
    assert_eq!(
        status.code(),
        Some(64),
        "usage errors exit 64 (EX_USAGE): {log}"
    );
    assert!(
        log.contains("error: invalid value 'localhost' for '--listen <IP:PORT>'"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn a_connection_cap_of_zero_is_rejected() {
    let (status, log) = run_host(&["--max-connections", "0"]);
    assert_eq!(
        status.code(),
        Some(64),
        "usage errors exit 64 (EX_USAGE): {log}"
    );
    assert!(
        log.contains("error: invalid value '0' for '--max-connections <N>'"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn an_instance_count_that_is_neither_a_count_nor_auto_is_rejected() {
    for bad in ["0", "lots", "257"] {
        let (status, log) = run_host(&["--instances", bad]);
        assert_eq!(
            status.code(),
            Some(64),
            "usage errors exit 64 (EX_USAGE): {log}"
        );
        assert!(
            log.contains(&format!(
                "error: invalid value '{bad}' for '--instances <N|auto>'"
            )) && log.contains("is neither \"auto\" nor a count from 1 to 256"),
            "{log}"
        );
        assert!(!log.contains("panicked"), "{log}");
    }
}

#[test]
fn an_address_in_use_is_reported() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, log) = run_host(&["--listen", &addr]);
    assert_eq!(status.code(), Some(69));
    assert_clean_error(
        &log,
        &format!("error: listen address {addr} is already in use"),
    );
}

#[test]
fn an_address_of_another_machine_is_reported() {
    let (status, log) = run_host(&["--listen", "192.0.2.1:9800"]);
    assert_eq!(status.code(), Some(69));
    assert_clean_error(&log, "error: cannot listen on 192.0.2.1:9800:");
}

#[test]
fn help_explains_every_option() {
    use clap::CommandFactory;
    let output = std::process::Command::new(host_bin())
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    // Every argument of the host's own definition (clap's --help and
    // --version included once built), as `--help` names it: a long option
    // or a positional's value name.
    let mut cli = host::cli::Cli::command();
    cli.build();
    let arguments: Vec<String> = cli
        .get_arguments()
        .map(|arg| match arg.get_long() {
            Some(long) => format!("--{long}"),
            None => arg
                .get_value_names()
                .and_then(|names| names.first())
                .map_or_else(|| arg.get_id().to_string(), ToString::to_string),
        })
        .collect();
    // In the long help an argument's line is indented less than the
    // description that must follow it.
    let indent = |line: &str| line.len() - line.trim_start().len();
    let lines: Vec<&str> = help.lines().collect();
    let headings: Vec<usize> = (0..lines.len())
        .filter(|&i| {
            let line = lines[i];
            (1..10).contains(&indent(line)) && line.trim_start().starts_with(['-', '[', '<'])
        })
        .collect();
    assert_eq!(
        headings.len(),
        arguments.len(),
        "--help lists other arguments than {arguments:?}:\n{help}"
    );
    for name in &arguments {
        let at = headings
            .iter()
            .find(|&&i| {
                lines[i]
                    .split_whitespace()
                    .map(|word| {
                        word.trim_end_matches(',')
                            .trim_matches(['[', ']', '<', '>'])
                    })
                    .any(|word| word == name)
            })
            .unwrap_or_else(|| panic!("--help does not list {name}:\n{help}"));
        let description = lines.get(at + 1).copied().unwrap_or_default();
        assert!(
            indent(description) >= 10 && !description.trim().is_empty(),
            "--help does not explain {name}:\n{help}"
        );
    }
    // The guest learns its address from the environment: help names it.
    assert!(help.contains("LISTEN_ADDR"), "{help}");
}

#[test]
fn version_names_the_commit_the_wasmtime_release_and_the_wasi_versions_served() {
    let output = std::process::Command::new(host_bin())
        .arg("--version")
        .output()
        .unwrap();
    assert!(output.status.success());
    let version = String::from_utf8(output.stdout).unwrap();
    assert!(version.starts_with("tcphost 0."), "{version}");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    // The wasmtime Cargo.lock pins.
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap();
    let wasmtime = lock
        .split("[[package]]")
        .find(|p| p.contains("\nname = \"wasmtime\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .unwrap()
        .trim_matches('"');
    assert!(
        version.contains(&format!("wasmtime {wasmtime};")),
        "{version}"
    );
    // The WASI versions the host's WIT serves.
    let p2 = std::fs::read_to_string(root.join("wit/world.wit")).unwrap();
    let p3 = std::fs::read_to_string(root.join("wit/p3/deps/cli.wit")).unwrap();
    assert!(p2.contains("include wasi:cli/command@0.2.12;"));
    assert!(p3.starts_with("package wasi:cli@0.3.0;"));
    assert!(version.contains("WASI 0.2.12 and 0.3.0"), "{version}");
    // The commit built (the tests run from the repository's checkout).
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(head.status.success());
    let commit = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    assert!(version.contains(&format!("(commit {commit};")), "{version}");
}

#[test]
fn the_exit_status_tells_usage_configuration_and_unavailable_apart() {
    // A wrong command line: 64.
    let (status, _) = run_host(&["--no-such-option"]);
    assert_eq!(status.code(), Some(64));
    let (status, log) = run_host(&["--name", "not a name"]);
    assert_eq!(status.code(), Some(64), "{log}");
    // A configuration that cannot work: 78.
    let (status, log, _) = run_manifest(
        "bad-limit",
        "[[tenant]]\nname = \"t\"\ncomponent = \"builtin:seed\"\nlisten = [\"127.0.0.1:0\"]\nlimits = { max_memory = \"lots\" }\n",
    );
    assert_eq!(status.code(), Some(78), "{log}");
    assert!(log.contains("tenant.max_memory"), "{log}");
    let (status, log) = run_host(&["builtin:nope"]);
    assert_eq!(status.code(), Some(78), "{log}");
    // Something needed that is not there now: 69.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, log) = run_host(&["--listen", &addr]);
    assert_eq!(status.code(), Some(69), "{log}");
    // --help and --version succeed.
    for asked in ["--help", "--version"] {
        let (status, _) = run_host(&[asked]);
        assert_eq!(status.code(), Some(0), "{asked}");
    }
}

#[test]
fn json_logs_are_one_object_per_line_with_the_tenant_as_a_field() {
    let mut host = Host::start(&["--listen", "127.0.0.1:0", "--log-format", "json"]);
    let line = host.wait_for_log("seed: listening on ");
    let listening: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr = listening["addr"].as_str().unwrap().parse().unwrap();
    assert_seed_reply(&round_trip(&mut connect(addr), b"hello json\n"));
    host.wait_for_log("hello json");
    host.signal("TERM");
    assert_eq!(host.wait_exit().code(), Some(0));
    let log = host.log();
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let payload = events
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("hello json"))
        })
        .expect("the guest's line about the payload");
    assert_eq!(payload["tenant"], "seed", "{payload}");
    assert_eq!(payload["target"], "guest", "{payload}");
    assert!(
        payload["timestamp"].is_string() && payload["level"] == "INFO",
        "{payload}"
    );
}

/// `tcphost --check ARGS`: its status, standard output and standard error.
fn check(args: &[&std::ffi::OsStr]) -> (Option<i32>, String, String) {
    let output = std::process::Command::new(host_bin())
        .arg("--check")
        .args(args)
        .env(
            "XDG_CACHE_HOME",
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("xdg-cache"),
        )
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_passes_a_good_manifest_and_listens_on_nothing() {
    // Its addresses are held here, as by the host it checks for a reload.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let dir = scratch_dir("check-good");
    let path = dir.join("tenants.toml");
    std::fs::write(
        &path,
        format!(
            "[[tenant]]\nname = \"a\"\ncomponent = \"builtin:seed\"\nlisten = [\"{addr}\"]\n\n\
             [[tenant]]\nname = \"b\"\ncomponent = \"builtin:echo\"\nlisten = [\"127.0.0.1:0\"]\n"
        ),
    )
    .unwrap();
    let (status, stdout, stderr) = check(&["--config".as_ref(), path.as_os_str()]);
    assert_eq!(status, Some(0), "{stderr}");
    assert!(
        stdout.starts_with(&format!(
            "ok: {} is valid: 2 tenants, 2 components loaded",
            path.display()
        )),
        "{stdout}"
    );
    assert!(!stderr.contains("listening on"), "{stderr}");
}

#[test]
fn check_fails_a_bad_manifest_or_component_as_the_host_would() {
    let dir = scratch_dir("check-bad");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[[tenant]]\nname = \"a\"\ncomponent = \"builtin:seed\"\nlisten = [\"127.0.0.1:0\"]\nlimits = { max_memory = \"lots\" }\n").unwrap();
    let (status, _, stderr) = check(&["--config".as_ref(), bad.as_os_str()]);
    assert_eq!(status, Some(78), "{stderr}");
    assert!(stderr.contains("bad.toml:5"), "{stderr}");
    // A component the host cannot link: its missing import named.
    let component =
        wat::parse_str(r#"(component (import "acme:db/query@1.0.0" (instance)))"#).unwrap();
    let path = fixture("unlinkable.wasm", &component);
    let (status, _, stderr) = check(&[path.as_os_str()]);
    assert_eq!(status, Some(78), "{stderr}");
    assert!(stderr.contains("acme:db/query@1.0.0"), "{stderr}");
    // A built-in guest as the one tenant.
    let (status, stdout, stderr) = check(&["builtin:echo".as_ref()]);
    assert_eq!(status, Some(0), "{stderr}");
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("ok: builtin:echo loads and links"));
    // What it asks of the host, named for the operator.
    let tenant = lines.next().unwrap_or_default();
    assert!(
        tenant.starts_with("tenant echo: builtin:echo (WASI 0.2) imports ")
            && tenant.contains("wasi:sockets/tcp@0.2.12")
            && !tenant.contains("wasi:filesystem"),
        "{stdout}"
    );
}

#[test]
fn completions_and_the_man_page_come_from_the_command_line_definitions() {
    // (roff writes a dash as \-.)
    for (args, expected, check) in [
        (
            vec!["--completions", "bash"],
            "--render-kubernetes",
            "--check",
        ),
        (vec!["--completions", "zsh"], "--log-format", "--check"),
        (vec!["--man"], ".TH tcphost 1", "\\-\\-check"),
    ] {
        let output = std::process::Command::new(host_bin())
            .args(&args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains(expected), "{args:?}: {text}");
        assert!(text.contains(check), "{args:?}: every option is there");
    }
}

#[test]
fn with_json_logs_the_fatal_error_is_a_json_line_too() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, log) = run_host(&["--listen", &addr, "--log-format", "json"]);
    assert_eq!(status.code(), Some(69), "{log}");
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(last["level"], "ERROR", "{last}");
    assert_eq!(last["exit_status"], 69, "{last}");
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .contains("is already in use"),
        "{last}"
    );
}

#[test]
fn no_grant_reaches_the_hosts_own_endpoints_from_the_command_line_or_the_manifest() {
    // The command line's endpoints over the manifest's: the one-tenant
    // form is a usage error naming --connect.
    let (status, _, stderr) = check(&[
        "builtin:echo".as_ref(),
        "--admin".as_ref(),
        "127.0.0.1:9900".as_ref(),
        "--connect".as_ref(),
        "127.0.0.1:9900".as_ref(),
    ]);
    assert_eq!(status, Some(64), "{stderr}");
    assert!(
        stderr.contains("--connect: 127.0.0.1:9900 is the host's admin endpoint"),
        "{stderr}"
    );
    // The control endpoint given on the command line, to a manifest whose
    // tenant may connect to that address.
    let dir = scratch_dir("check-endpoints");
    let token = dir.join("token");
    std::fs::write(&token, "secret").unwrap();
    let path = dir.join("tenants.toml");
    std::fs::write(
        &path,
        "[[tenant]]\nname = \"a\"\ncomponent = \"builtin:seed\"\nlisten = [\"127.0.0.1:0\"]\nconnect = [\"127.0.0.1:9901\"]\n",
    )
    .unwrap();
    let (status, _, stderr) = check(&[
        "--config".as_ref(),
        path.as_os_str(),
        "--control".as_ref(),
        "0.0.0.0:9901".as_ref(),
        "--control-token-file".as_ref(),
        token.as_os_str(),
    ]);
    assert_eq!(status, Some(78), "{stderr}");
    assert!(
        stderr.contains("tenant 'a': connect: 127.0.0.1:9901 is the host's control endpoint"),
        "{stderr}"
    );
    // Any other address is granted as asked.
    let (status, _, stderr) = check(&[
        "builtin:echo".as_ref(),
        "--admin".as_ref(),
        "127.0.0.1:9900".as_ref(),
        "--connect".as_ref(),
        "127.0.0.1:9902".as_ref(),
    ]);
    assert_eq!(status, Some(0), "{stderr}");
}
