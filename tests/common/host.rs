//! The host as a process: started with arguments (or a manifest), its
//! log watched line by line, killed when dropped; and its exit, for the
//! tests of what makes it fail.

use super::*;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The log lines a process has written to stderr so far.
#[derive(Default)]
struct Log {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
    /// The process closed its stderr (it exited): no line will follow.
    ended: std::sync::atomic::AtomicBool,
}

/// A running host process, killed when dropped.
pub struct Host {
    child: Child,
    log: Arc<Log>,
    /// Started with two instances per tenant: checked when dropped.
    two_instances: bool,
}

impl Host {
    /// Starts the host with `args` (stdout discarded, stderr captured).
    pub fn start<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Host {
        Host::start_with_env(args, &[])
    }

    /// Starts the host with `args` in the working directory `dir`.
    pub fn start_in<S: AsRef<std::ffi::OsStr>>(dir: &Path, args: &[S]) -> Host {
        Host::spawn(Command::new(host_bin()).args(args).current_dir(dir))
    }

    /// Starts the host with `args` and environment variables `env` set (an
    /// empty value removes the variable).
    pub fn start_with_env<S: AsRef<std::ffi::OsStr>>(args: &[S], env: &[(&str, &str)]) -> Host {
        let mut command = Command::new(host_bin());
        for (key, value) in env {
            if value.is_empty() {
                command.env_remove(key);
            } else {
                command.env(key, value);
            }
        }
        command.args(args);
        Host::spawn(&mut command)
    }

    fn spawn(command: &mut Command) -> Host {
        raise_open_file_limit();
        if two_instances() {
            let args: Vec<std::ffi::OsString> = command.get_args().map(Into::into).collect();
            match args.iter().position(|a| a == "--config") {
                Some(at) => {
                    let path = PathBuf::from(&args[at + 1]);
                    let text = std::fs::read_to_string(&path).unwrap();
                    std::fs::write(&path, with_instances_two(&text)).unwrap();
                }
                None => {
                    command.args(["--instances", "2"]);
                }
            }
        }
        // The default compile cache of a test host lives under the build
        // directory, not in the user's home (unless a test says otherwise).
        let chosen = command
            .get_envs()
            .any(|(key, _)| key == "XDG_CACHE_HOME" || key == "HOME");
        if !chosen {
            command.env(
                "XDG_CACHE_HOME",
                Path::new(env!("CARGO_TARGET_TMPDIR")).join("xdg-cache"),
            );
        }
        let mut child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the host binary starts");
        let log = Arc::new(Log::default());
        let stderr = child.stderr.take().expect("stderr is piped");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lines.lock().unwrap().push(line);
                sink.grew.notify_all();
            }
            let _held = sink.lines.lock().unwrap();
            sink.ended.store(true, std::sync::atomic::Ordering::SeqCst);
            sink.grew.notify_all();
        });
        Host {
            child,
            log,
            two_instances: two_instances(),
        }
    }

    /// Starts the host with `args`, allowed at most `files` open file
    /// descriptors (through the shell's `ulimit`, then `exec`).
    pub fn start_with_fd_limit<S: AsRef<std::ffi::OsStr>>(args: &[S], files: u32) -> Host {
        Host::start_under_ulimit(args, &format!("-n {files}"))
    }

    /// Starts the host with `args` under `ulimit LIMITS` (e.g. `-Sn 64`).
    pub fn start_under_ulimit<S: AsRef<std::ffi::OsStr>>(args: &[S], limits: &str) -> Host {
        let script = format!("ulimit {limits} && exec \"$0\" \"$@\"");
        let mut full: Vec<std::ffi::OsString> = vec!["-c".into(), script.into(), host_bin().into()];
        full.extend(args.iter().map(|a| a.as_ref().to_owned()));
        Host::spawn(Command::new("sh").args(full))
    }

    /// The host's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The host's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// The descriptors the host holds open now.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// CPU time the host has used so far (user + system).
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the command name, which is in parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // USER_HZ is 100 on Linux.
        Duration::from_millis(ticks * 10)
    }

    /// Starts the host on a free port with `guest` (the built-in guest if
    /// `None`) and waits until the guest listens. Returns the host and the
    /// address to connect to.
    pub fn serve(guest: Option<&Path>) -> (Host, SocketAddr) {
        Host::serve_with(guest, &[])
    }

    /// [`Host::serve`] with the tenant named `name`.
    pub fn serve_as(guest: &Path, name: &str) -> (Host, SocketAddr) {
        Host::serve_with(Some(guest), &["--name", name])
    }

    /// [`Host::serve`] with `extra` arguments.
    pub fn serve_with(guest: Option<&Path>, extra: &[&str]) -> (Host, SocketAddr) {
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        if let Some(guest) = guest {
            args.push(guest.into());
        }
        args.extend(["--listen".into(), "127.0.0.1:0".into()]);
        args.extend(extra.iter().map(Into::into));
        let host = Host::start(&args);
        let line = host.wait_for_log(": listening on ");
        host.wait_for_second_instance(": listening on ");
        let addr = line
            .split(": listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        wait_until_accepting(addr);
        (host, addr)
    }

    /// With two instances per tenant ([`with_two_instances`]), waits until
    /// the second one logged `marker` (it listens) too, so the test runs
    /// with both serving.
    pub fn wait_for_second_instance(&self, marker: &str) {
        if self.two_instances {
            wait_until("the second instance listens", || {
                self.log()
                    .lines()
                    .any(|l| l.contains(marker) && l.contains("instance=1"))
            });
        }
    }

    /// Waits for a log line containing `needle` and returns it; panics with
    /// the whole log after [`TIMEOUT`].
    pub fn wait_for_log(&self, needle: &str) -> String {
        self.wait_for_log_within(needle, TIMEOUT)
    }

    /// [`Host::wait_for_log`], waiting at most `within`.
    pub fn wait_for_log_within(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        let mut lines = self.log.lines.lock().unwrap();
        loop {
            if let Some(line) = lines.iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "no log line with {needle:?} within {within:?}; log:\n{}",
                lines.join("\n")
            );
            lines = self.log.grew.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    /// Waits (until `deadline`) for the log reader to reach the end of an
    /// exited host's stderr, so every line it wrote is in the log.
    fn wait_for_end_of_log(&self, deadline: Instant) {
        let mut lines = self.log.lines.lock().unwrap();
        while !self.log.ended.load(std::sync::atomic::Ordering::SeqCst) {
            let now = Instant::now();
            assert!(now < deadline, "the host's stderr never closed");
            lines = self.log.grew.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lines.lock().unwrap().join("\n")
    }

    /// Sends a signal (e.g. "TERM", "INT") to the host.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the host to exit, at most [`TIMEOUT`].
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the host") {
                self.wait_for_end_of_log(deadline);
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the host did not exit within {TIMEOUT:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A test meant to run on two instances really did.
        if self.two_instances && !std::thread::panicking() {
            let log = self.log();
            assert!(
                log.lines()
                    .any(|l| l.contains("guest started") && l.contains("instance=1")),
                "the host never started a second instance:\n{log}"
            );
        }
    }
}

/// Runs the host to completion with `args`, returning its exit status and
/// stderr; fails the test if it has not exited within [`TIMEOUT`].
pub fn run_host<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (ExitStatus, String) {
    let mut host = Host::start(args);
    let status = host.wait_exit();
    (status, host.log())
}

/// Asserts the output of a failed run is a clean error: the expected text,
/// no Rust panic, no Rust backtrace.
pub fn assert_clean_error(stderr: &str, expected: &str) {
    assert!(
        stderr.contains(expected),
        "expected {expected:?} in:\n{stderr}"
    );
    // A guest's own panic message reaches the log through its stderr, tagged
    // `guest:`; any other panic is the host's.
    let host_panic = stderr
        .lines()
        .any(|l| l.contains("panicked") && !l.contains(" guest: "));
    assert!(!host_panic, "the host panicked:\n{stderr}");
    assert!(
        !stderr.contains("stack backtrace"),
        "a Rust backtrace was printed:\n{stderr}"
    );
    let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(
        error_lines.len(),
        1,
        "expected exactly one error line in:\n{stderr}"
    );
}

/// The first address in a "NAME: listening on ADDR" (or similar) line.
pub fn addr_after(line: &str, marker: &str) -> SocketAddr {
    line.split(marker)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no address after {marker:?} in {line:?}"))
}

/// Runs the host to its end on a manifest `text` written to a fresh
/// scratch directory (`tag`); returns its exit status, its log and the
/// manifest's path.
pub fn run_manifest(tag: &str, text: &str) -> (ExitStatus, String, PathBuf) {
    let manifest = scratch_dir(tag).join("tenants.toml");
    std::fs::write(&manifest, text).unwrap();
    let (status, log) = run_host(&["--config".as_ref(), manifest.as_os_str()]);
    (status, log, manifest)
}
