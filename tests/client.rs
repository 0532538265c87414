//! The client binary against the real host: messages in, replies out.

mod common;

use common::*;
use std::io::Write;
use std::process::{Command, Stdio};

#[test]
fn client_sends_a_message_count_times_and_prints_each_reply() {
    let (_host, addr) = Host::serve(None);
    let output = Command::new(client_bin())
        .args([&addr.to_string(), "--message", "hello", "--count", "3"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    for line in lines {
        assert_seed_reply(&format!("{line}\n"));
    }
}

#[test]
fn client_sends_each_stdin_line() {
    let (_host, addr) = Host::serve(None);
    let mut child = Command::new(client_bin())
        .arg(addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"one\ntwo\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    stdout
        .lines()
        .for_each(|l| assert_seed_reply(&format!("{l}\n")));
}

#[test]
fn client_reports_a_refused_connection_in_one_line() {
    // A port bound and not listening, held for the whole test: nothing
    // can take it meanwhile, and a connect to it is refused.
    let held = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    held.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let free = held.local_addr().unwrap().as_socket().unwrap();
    let output = Command::new(client_bin())
        .args([&free.to_string(), "-m", "x"])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(69),
        "unavailable, as tcphost says it"
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!("error: cannot connect to {free}:")),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn a_count_or_timeout_of_zero_is_refused_not_changed() {
    for args in [
        ["--message", "x", "--count", "0"],
        ["--message", "x", "--timeout", "0"],
    ] {
        let output = std::process::Command::new(client_bin())
            .arg("127.0.0.1:9")
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(64), "a usage error: {args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("is not in 1.."), "{args:?}: {stderr}");
    }
}

#[test]
fn the_client_counts_with_n_as_the_host_configures_with_c() {
    let help = std::process::Command::new(client_bin())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("-n, --count"), "{help}");
    assert!(!help.contains("-c,"), "{help}");
    assert!(
        !help.contains("Runs TCP servers"),
        "the client's help is its own: {help}"
    );
}

#[test]
fn the_client_prints_its_own_completions_and_man_page() {
    for (args, expected) in [
        (["--completions", "bash"], "--timeout"),
        (["--completions", "zsh"], "--count"),
    ] {
        let output = Command::new(client_bin()).args(args).output().unwrap();
        assert!(output.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            text.contains("tcp-client") && text.contains(expected),
            "{args:?}: {text}"
        );
    }
    let output = Command::new(client_bin()).arg("--man").output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains(".TH tcp-client 1"));
}
