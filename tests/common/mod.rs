//! Shared helpers for the integration tests: start the real host binary,
//! watch its log, talk to guests over real TCP on 127.0.0.1. Every wait is
//! bounded.
#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod oci;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long any single wait in a test may take before it fails.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The host binary under test.
pub fn host_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tcphost")
}

/// The client binary under test.
pub fn client_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tcp-client")
}

thread_local! {
    /// Whether the test on this thread runs the WASI 0.3 form of the guests
    /// (see [`on_wasi_p3`]).
    static WASI_P3: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `test` with the WASI 0.3 form of every guest it names through
/// [`builtin`], [`repo_guest`] and [`hostile_guest`].
pub fn on_wasi_p3(test: fn()) {
    WASI_P3.with(|p3| p3.set(true));
    test();
}

/// Whether this test runs the WASI 0.3 guests.
pub fn wasi_p3() -> bool {
    WASI_P3.with(std::cell::Cell::get)
}

/// Runs the named tests of this file again, each with the WASI 0.3 form of
/// its guests, as `wasi_p3::NAME`: the same guarantees, proven for both.
#[macro_export]
macro_rules! also_on_wasi_p3 {
    ($($test:ident),* $(,)?) => {
        mod wasi_p3 {
            $(
                #[test]
                fn $test() {
                    $crate::common::on_wasi_p3(super::$test);
                }
            )*
        }
    };
}

thread_local! {
    /// Whether the test on this thread runs every tenant as two instances
    /// (see [`with_two_instances`]).
    static TWO_INSTANCES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `test` with every tenant of every host it starts running two
/// instances of its component (`instances = 2` in the manifest's
/// `[limits]`, or `--instances 2` for the one-tenant shorthand). The host
/// is checked, when the test ends, to have started a second instance.
pub fn with_two_instances(test: fn()) {
    TWO_INSTANCES.with(|two| two.set(true));
    test();
}

/// Whether this test runs every tenant as two instances.
pub fn two_instances() -> bool {
    TWO_INSTANCES.with(std::cell::Cell::get)
}

/// Runs the named tests of this file again, each with every tenant as two
/// instances, as `two_instances::NAME`: the same guarantees, proven for a
/// tenant spread over instances.
#[macro_export]
macro_rules! also_with_two_instances {
    ($($test:ident),* $(,)?) => {
        mod two_instances {
            $(
                #[test]
                fn $test() {
                    $crate::common::with_two_instances(super::$test);
                }
            )*
        }
    };
}

/// `manifest` with `instances = 2` as the default of every tenant.
pub fn with_instances_two(manifest: &str) -> String {
    match manifest.find("\n[limits]\n") {
        Some(at) => {
            let end = at + "\n[limits]\n".len();
            format!("{}instances = 2\n{}", &manifest[..end], &manifest[end..])
        }
        None => format!("{manifest}\n[limits]\ninstances = 2\n"),
    }
}

/// `builtin:NAME` in a manifest, in the form this test runs.
pub fn builtin(name: &str) -> String {
    if wasi_p3() {
        format!("builtin:{name}@p3")
    } else {
        format!("builtin:{name}")
    }
}

/// One of the repository's guests (`guest/src/bin/{name}.rs`), as built
/// for embedding in the host, in the form this test runs.
pub fn repo_guest(name: &str) -> PathBuf {
    let dir = if wasi_p3() {
        env!("TCPHOST_P3_GUEST_DIR")
    } else {
        env!("TCPHOST_GUEST_DIR")
    };
    let path = PathBuf::from(dir).join(format!("{name}.wasm"));
    assert!(path.is_file(), "no guest named {name}");
    path
}

/// A test guest's component, from `tests/guests/src/bin/{name}.rs`.
pub fn test_guest(name: &str) -> PathBuf {
    test_guests::path(name)
}

/// The hostile test guest, in the form this test runs (`hostile`, or
/// `hostile-p3` on WASI 0.3).
pub fn hostile_guest() -> PathBuf {
    test_guest(if wasi_p3() { "hostile-p3" } else { "hostile" })
}

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

/// Raises this test process's soft limit on open files to its hard limit,
/// once, as the host raises its own: tests holding thousands of
/// connections would otherwise fail under the 1024 most desktops set.
fn raise_open_file_limit() {
    static RAISED: std::sync::Once = std::sync::Once::new();
    RAISED.call_once(|| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit read and write one rlimit.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) == 0
                && limit.rlim_cur < limit.rlim_max
            {
                limit.rlim_cur = limit.rlim_max;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) != 0 {
                    eprintln!(
                        "cannot raise the open-file limit to {}: tests holding thousands of connections may fail",
                        limit.rlim_max
                    );
                }
            }
        }
    });
}

/// Retries connecting until the guest accepts (it may log before it listens).
pub fn wait_until_accepting(addr: SocketAddr) {
    let deadline = Instant::now() + TIMEOUT;
    while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{addr} never accepted a connection"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Connects with the test timeouts set.
pub fn connect(addr: SocketAddr) -> TcpStream {
    raise_open_file_limit();
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connecting to the guest");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Sends `message` and reads one newline-terminated reply.
pub fn round_trip(stream: &mut TcpStream, message: &[u8]) -> String {
    stream.write_all(message).expect("sending");
    read_line(stream)
}

/// Reads up to and including the next newline (byte by byte: replies are
/// short and the test must not read past one reply).
pub fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => panic!(
                "connection closed after {:?}",
                String::from_utf8_lossy(&line)
            ),
            Ok(_) => {
                line.push(byte[0]);
                if byte[0] == b'\n' {
                    return String::from_utf8(line).expect("a UTF-8 reply");
                }
            }
            Err(e) => panic!(
                "reading a reply: {e} (after {:?})",
                String::from_utf8_lossy(&line)
            ),
        }
    }
}

/// Asserts `reply` is exactly `rust socket server : N\n` with N in 0..100.
pub fn assert_seed_reply(reply: &str) {
    let n = reply
        .strip_prefix("rust socket server : ")
        .and_then(|rest| rest.strip_suffix('\n'))
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("malformed reply {reply:?}"));
    assert!(n < 100, "N out of range in {reply:?}");
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

/// A host running a manifest, with each tenant's address.
pub struct Tenants {
    /// The host process.
    pub host: Host,
    /// Tenant name to its (first) listen address.
    pub addrs: std::collections::HashMap<String, SocketAddr>,
    /// The admin endpoint, if the manifest enabled it.
    pub admin: Option<SocketAddr>,
    /// The control endpoint, if the manifest enabled it.
    pub control: Option<SocketAddr>,
    /// The directory holding the manifest.
    pub dir: PathBuf,
}

/// A fresh directory for one test's files.
pub fn scratch_dir(tag: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("host-test-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    remove_at_exit(&dir);
    dir
}

/// The scratch directories this test process made, removed when it exits
/// (in the system's temporary directory, where a control socket's path
/// stays short, they would otherwise pile up run after run).
static SCRATCH: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn remove_at_exit(dir: &Path) {
    extern "C" fn remove_all() {
        if let Ok(dirs) = SCRATCH.lock() {
            for dir in dirs.iter() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: registers a plain function to run at exit.
        unsafe { libc::atexit(remove_all) };
    });
    SCRATCH.lock().unwrap().push(dir.to_owned());
}

/// The first address in a "NAME: listening on ADDR" (or similar) line.
pub fn addr_after(line: &str, marker: &str) -> SocketAddr {
    line.split(marker)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no address after {marker:?} in {line:?}"))
}

/// The control endpoint's bearer token in test manifests.
pub const CONTROL_TOKEN: &str = "test-token-7f3c9a";

/// `manifest` with a control endpoint (loopback, the test token in
/// `control-token` beside the manifest) added when it has an admin one,
/// allowed to swap in the built guests and the tests' scratch files.
pub fn with_control(manifest: &str) -> String {
    if manifest.contains("admin =") && !manifest.contains("control =") {
        let dirs: Vec<String> = [
            repo_guest("seed"),
            test_guest("hostile"),
            std::env::temp_dir().join("x"),
        ]
        .iter()
        .map(|p| format!("{:?}", p.parent().unwrap().display().to_string()))
        .collect();
        let dirs = if manifest.contains("component_dirs") {
            String::new()
        } else {
            format!("component_dirs = [{}]\n", dirs.join(", "))
        };
        manifest.replacen(
            "[host]\n",
            &format!(
                "[host]\ncontrol = \"127.0.0.1:0\"\ncontrol_token_file = \"control-token\"\n{dirs}"
            ),
            1,
        )
    } else {
        manifest.to_owned()
    }
}

impl Tenants {
    /// Writes `manifest` to a scratch directory, starts the host on it with
    /// `extra` arguments and waits until every tenant in `names` listens.
    /// A manifest with an admin endpoint gets a control endpoint too (see
    /// [`with_control`]); [`Tenants::post`] reaches it.
    pub fn start(manifest: &str, names: &[&str], extra: &[&str]) -> Tenants {
        Tenants::start_within(manifest, names, extra, TIMEOUT)
    }

    /// [`Tenants::start`], waiting at most `within` for each tenant and
    /// endpoint (a large component compiles for seconds on a busy machine).
    pub fn start_within(
        manifest: &str,
        names: &[&str],
        extra: &[&str],
        within: Duration,
    ) -> Tenants {
        let dir = scratch_dir("tenants");
        let path = dir.join("tenants.toml");
        std::fs::write(dir.join("control-token"), format!("{CONTROL_TOKEN}\n")).unwrap();
        let manifest = &with_control(manifest);
        std::fs::write(&path, manifest).unwrap();
        let mut args: Vec<std::ffi::OsString> = vec!["--config".into(), path.into()];
        args.extend(extra.iter().map(Into::into));
        let host = Host::start(&args);
        let mut addrs = std::collections::HashMap::new();
        for name in names {
            let marker = format!("{name}: listening on ");
            let addr = addr_after(&host.wait_for_log_within(&marker, within), &marker);
            wait_until_accepting(addr);
            host.wait_for_second_instance(&marker);
            addrs.insert(name.to_string(), addr);
        }
        let admin = manifest.contains("admin =").then(|| {
            addr_after(
                &host.wait_for_log_within("admin: listening on ", within),
                "admin: listening on ",
            )
        });
        let control = manifest.contains("control = \"127.0.0.1").then(|| {
            addr_after(
                &host.wait_for_log_within("control: listening on ", within),
                "control: listening on ",
            )
        });
        Tenants {
            host,
            addrs,
            admin,
            control,
            dir,
        }
    }

    /// `POST path` with `body` to the control endpoint, with the token.
    pub fn post(&self, path: &str, body: &str) -> (u16, String) {
        let control = self.control.expect("the manifest enables control");
        http_post_as(control, path, body, Some(CONTROL_TOKEN))
    }

    /// Rewrites the manifest as `manifest` (with the control endpoint kept).
    pub fn rewrite(&self, manifest: &str) {
        let mut manifest = with_control(manifest);
        if two_instances() {
            manifest = with_instances_two(&manifest);
        }
        std::fs::write(self.dir.join("tenants.toml"), manifest).unwrap();
    }

    /// A tenant's address.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.addrs[name]
    }

    /// One tenant's entry from `GET /status/NAME`.
    pub fn status(&self, name: &str) -> serde_json::Value {
        let (code, body) = http_get(
            self.admin.expect("the manifest enables admin"),
            &format!("/status/{name}"),
        );
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("the status is JSON")
    }

    /// Polls `GET /status/NAME` until `ok` holds for it, at most [`TIMEOUT`].
    pub fn wait_status(
        &self,
        name: &str,
        what: &str,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let status = self.status(name);
            if ok(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never reached {what}: {status}\nlog:\n{}",
                self.host.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `GET path` over HTTP/1.0; returns the status code and body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(
        addr,
        &format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n"),
    )
}

/// `POST path` with `body` over HTTP/1.0; returns the status code and body.
pub fn http_post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    http_post_as(addr, path, body, None)
}

/// [`http_post`] with `token` as the bearer token, if any.
pub fn http_post_as(
    addr: SocketAddr,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, String) {
    let authorization = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    http(
        addr,
        &format!(
            "POST {path} HTTP/1.0\r\nHost: {addr}\r\n{authorization}Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

fn http(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = connect(addr);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("an HTTP response");
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (code, body)
}

/// The samples of `GET /metrics`, by series (`name{labels}`).
pub fn metrics(admin: SocketAddr) -> std::collections::HashMap<String, f64> {
    let (code, body) = http_get(admin, "/metrics");
    assert_eq!(code, 200, "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("a sample line");
            (series.to_owned(), value.parse().expect("a numeric sample"))
        })
        .collect()
}

/// One series of `GET /metrics`, e.g.
/// `tcphost_connections_open{tenant="seed"}`; panics if it is missing.
pub fn metric(admin: SocketAddr, series: &str) -> f64 {
    let all = metrics(admin);
    *all.get(series)
        .unwrap_or_else(|| panic!("no series {series} in /metrics: {all:?}"))
}

/// Polls `series` until `ok` holds for it, at most [`TIMEOUT`].
pub fn wait_metric(admin: SocketAddr, series: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let value = metric(admin, series);
        if ok(value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{series} stayed at {value} for {TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
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

/// Polls `condition` until it holds, at most [`TIMEOUT`]; `what` says
/// what was awaited when it never does.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A well-behaved client hammering a tenant with round trips from its own
/// thread, counting answers and failures, until stopped.
pub struct Neighbour {
    stop: Arc<std::sync::atomic::AtomicBool>,
    answered: Arc<std::sync::atomic::AtomicU64>,
    /// The slowest answered round trip, in microseconds.
    slowest_us: Arc<std::sync::atomic::AtomicU64>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl Neighbour {
    /// Starts round trips to the seed guest at `addr`, one every few ms.
    pub fn start(addr: SocketAddr) -> Neighbour {
        use std::sync::atomic::Ordering::Relaxed;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answered = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let slowest_us = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (flag, count, slowest) = (stop.clone(), answered.clone(), slowest_us.clone());
        let thread = std::thread::spawn(move || {
            let mut failures = Vec::new();
            let mut stream = connect(addr);
            while !flag.load(Relaxed) {
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let started = Instant::now();
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    assert_seed_reply(&round_trip(&mut stream, b"are you there?\n"));
                }));
                match outcome {
                    Ok(()) => {
                        count.fetch_add(1, Relaxed);
                        let took = u64::try_from(started.elapsed().as_micros()).unwrap();
                        slowest.fetch_max(took, Relaxed);
                    }
                    Err(_) => {
                        failures.push(format!(
                            "round trip after {} answers failed",
                            count.load(Relaxed)
                        ));
                        stream = connect(addr);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            failures
        });
        Neighbour {
            stop,
            answered,
            slowest_us,
            thread,
        }
    }

    /// As [`Neighbour::assert_all_answered`], and asserts no round trip
    /// took `longer` (a bound generous enough for a loaded 2-core machine
    /// running the debug host, far below the stalls a hostile guest
    /// caused).
    pub fn assert_answered_within(self, longer: Duration) -> u64 {
        let slowest = self.slowest_us.clone();
        let answered = self.assert_all_answered();
        let slowest = Duration::from_micros(slowest.load(std::sync::atomic::Ordering::Relaxed));
        assert!(
            slowest <= longer,
            "the neighbour's slowest round trip took {slowest:?} (of {answered})"
        );
        answered
    }

    /// Stops (after at least one answer) and asserts every request was
    /// answered; returns how many were.
    pub fn assert_all_answered(self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        let deadline = Instant::now() + TIMEOUT;
        while self.answered.load(Relaxed) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop.store(true, Relaxed);
        let failures = self.thread.join().expect("the neighbour thread");
        assert!(
            failures.is_empty(),
            "the neighbour was disturbed: {failures:?}"
        );
        let answered = self.answered.load(Relaxed);
        assert!(answered > 0, "the neighbour got no answers");
        answered
    }
}
