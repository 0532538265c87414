//! Who may change what runs: the read-only admin endpoint refuses control
//! requests; the control endpoint wants its bearer token (or, on a Unix
//! socket, the socket file's permissions), logs an audit line for every
//! request and counts it.

mod common;

use common::*;
use std::io::{Read, Write};

/// A manifest with admin (and, through the test helpers, control)
/// endpoints and one seed tenant `t`.
const ONE: &str = "[host]\nadmin = \"127.0.0.1:0\"\n\n[[tenant]]\nname = \"t\"\ncomponent = \"builtin:seed\"\nlisten = [\"127.0.0.1:0\"]\n";

fn generation(t: &Tenants) -> u64 {
    t.status("t")["generation"].as_u64().unwrap()
}

#[test]
fn a_control_request_on_the_read_only_endpoint_is_refused_and_changes_nothing() {
    let t = Tenants::start(ONE, &["t"], &[]);
    let admin = t.admin.unwrap();
    let before = generation(&t);
    for (path, body) in [("/tenants/t/swap", "builtin:echo"), ("/reload", "")] {
        let (code, answer) = http_post_as(admin, path, body, Some(CONTROL_TOKEN));
        assert_eq!(code, 405, "{path}: {answer}");
        assert!(answer.contains("read-only"), "{answer}");
    }
    assert_eq!(generation(&t), before);
    assert_seed_reply(&round_trip(&mut connect(t.addr("t")), b"still\n"));
}

#[test]
fn control_requests_need_the_token_and_each_is_audited() {
    let t = Tenants::start(ONE, &["t"], &[]);
    let control = t.control.unwrap();
    let before = generation(&t);
    let (code, body) = http_post_as(control, "/tenants/t/swap", "builtin:echo", None);
    assert_eq!(code, 401, "{body}");
    let (code, body) = http_post_as(control, "/tenants/t/swap", "builtin:echo", Some("guess"));
    assert_eq!(code, 401, "{body}");
    assert_eq!(generation(&t), before, "a refused request changed nothing");
    let (code, body) = t.post("/tenants/t/swap", "builtin:echo");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        round_trip(&mut connect(t.addr("t")), b"echoed\n"),
        "echoed\n"
    );
    // From where, what, the outcome: one line per request.
    t.host
        .wait_for_log("POST /tenants/t/swap: refused, no bearer token");
    t.host
        .wait_for_log("POST /tenants/t/swap: refused, wrong bearer token");
    t.host.wait_for_log("POST /tenants/t/swap: 200 OK");
    assert!(
        !t.host.log().contains(CONTROL_TOKEN),
        "the token was logged"
    );
    let admin = t.admin.unwrap();
    let series = |outcome: &str| {
        format!("tcphost_control_requests_total{{action=\"swap\",outcome=\"{outcome}\"}}")
    };
    assert_eq!(metric(admin, &series("unauthorized")), 2.0);
    assert_eq!(metric(admin, &series("ok")), 1.0);
}

#[test]
fn replacing_the_token_file_rotates_the_token() {
    let t = Tenants::start(ONE, &["t"], &[]);
    let control = t.control.unwrap();
    assert_eq!(t.post("/reload", "").0, 200);
    std::fs::write(t.dir.join("control-token"), "the-next-token\n").unwrap();
    assert_eq!(t.post("/reload", "").0, 401, "the old token is refused");
    let (code, body) = http_post_as(control, "/reload", "", Some("the-next-token"));
    assert_eq!(code, 200, "{body}");
}

#[test]
fn a_tcp_control_endpoint_without_a_token_file_is_a_manifest_error() {
    let (status, log, manifest) = run_manifest(
        "control-no-token",
        &ONE.replace("[host]\n", "[host]\ncontrol = \"127.0.0.1:0\"\n"),
    );
    assert_eq!(status.code(), Some(78), "{log}");
    assert_clean_error(
        &log,
        &format!(
            "error: {}:2: host.control: a TCP control endpoint needs host.control_token_file",
            manifest.display()
        ),
    );
}

#[test]
fn a_unix_control_socket_is_owner_only_and_its_permissions_are_the_gate() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch_dir("control-unix");
    let socket = dir.join("control.sock");
    let manifest = dir.join("tenants.toml");
    std::fs::write(
        &manifest,
        ONE.replace(
            "[host]\n",
            &format!("[host]\ncontrol = \"unix:{}\"\n", socket.display()),
        ),
    )
    .unwrap();
    let host = Host::start(&["--config".as_ref(), manifest.as_os_str()]);
    host.wait_for_log("control: listening on unix:");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    stream
        .write_all(b"POST /reload HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    host.wait_for_log("audit: the unix socket: POST /reload: 200 OK");
    // SAFETY: geteuid only reads this process's effective user id.
    if unsafe { libc::geteuid() } == 0 {
        // Another user is refused by the file's mode alone...
        match reload_as_nobody(&socket) {
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}"),
            Ok(ok) => panic!("user nobody connected (and was answered 200 OK: {ok})"),
        }
        // ...and let in once the mode does (no token is asked for).
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(
            reload_as_nobody(&socket).unwrap(),
            "nobody was not answered 200 OK"
        );
    } else {
        // No other user to be (that takes root): the owner, refused once
        // the mode does not let it in, shows the mode is the gate.
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o000)).unwrap();
        let e = std::os::unix::net::UnixStream::connect(&socket).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    }
}

/// Whether user `nobody` (uid and gid 65534, no groups) is answered 200 OK
/// to `POST /reload` on the Unix socket `path`, or the error connecting:
/// tried in a child process that changes user first (only root may).
fn reload_as_nobody(path: &std::path::Path) -> std::io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    // Everything the child needs is made before the fork: a child of a
    // threaded process may only make system calls.
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    assert!(bytes.len() < address.sun_path.len(), "{}", path.display());
    for (to, from) in address.sun_path.iter_mut().zip(bytes) {
        *to = *from as libc::c_char;
    }
    let request = b"POST /reload HTTP/1.0\r\nContent-Length: 0\r\n\r\n";
    // The child's exit code: 0 for 200 OK, 1 for another answer, 100 +
    // errno of a failed connect, 99 for anything else.
    // SAFETY: the child makes only system calls on memory made before the
    // fork, then exits without running any of the parent's code.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: as above: raw system calls only, then _exit.
        unsafe {
            let nobody: libc::c_long = 65534;
            if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
                || libc::syscall(libc::SYS_setgid, nobody) != 0
                || libc::syscall(libc::SYS_setuid, nobody) != 0
            {
                libc::_exit(99);
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if fd < 0 {
                libc::_exit(99);
            }
            let size = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            if libc::connect(fd, (&raw const address).cast(), size) != 0 {
                libc::_exit(100 + *libc::__errno_location());
            }
            if libc::write(fd, request.as_ptr().cast(), request.len()) != request.len() as isize {
                libc::_exit(99);
            }
            let expected = b"HTTP/1.0 200";
            let mut answer = [0u8; 12];
            let mut got = 0;
            while got < answer.len() {
                let n = libc::read(fd, answer[got..].as_mut_ptr().cast(), answer.len() - got);
                if n <= 0 {
                    libc::_exit(99);
                }
                got += n as usize;
            }
            libc::_exit(i32::from(answer != *expected));
        }
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    let waited = unsafe { libc::waitpid(pid, &raw mut status, 0) };
    assert_eq!(waited, pid, "{}", std::io::Error::last_os_error());
    assert!(libc::WIFEXITED(status), "the child ended with {status}");
    match libc::WEXITSTATUS(status) {
        code @ 0..=1 => Ok(code == 0),
        code @ 100.. => Err(std::io::Error::from_raw_os_error(code - 100)),
        code => panic!("the child, as nobody, failed before an answer ({code})"),
    }
}

#[test]
fn a_swap_loads_only_files_under_the_allowed_directories() {
    let t = Tenants::start(
        &ONE.replace("[host]\n", "[host]\ncomponent_dirs = [\"guests\"]\n"),
        &["t"],
        &[],
    );
    let guests = t.dir.join("guests");
    std::fs::create_dir_all(&guests).unwrap();
    let inside = guests.join("echo.wasm");
    std::fs::copy(repo_guest("echo"), &inside).unwrap();
    let outside = scratch_dir("elsewhere").join("upper.wasm");
    std::fs::copy(repo_guest("upper"), &outside).unwrap();
    let link = guests.join("link.wasm");
    std::os::unix::fs::symlink(&outside, &link).unwrap();

    let (code, body) = t.post("/tenants/t/swap", &outside.display().to_string());
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("is outside the directories a swap may load from"),
        "{body}"
    );
    let (code, body) = t.post("/tenants/t/swap", &link.display().to_string());
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("the path leads out of the directory"),
        "{body}"
    );
    assert_seed_reply(&round_trip(&mut connect(t.addr("t")), b"still\n"));

    let (code, body) = t.post("/tenants/t/swap", &inside.display().to_string());
    assert_eq!(code, 200, "{body}");
    assert_eq!(round_trip(&mut connect(t.addr("t")), b"in\n"), "in\n");
    let (code, body) = t.post("/tenants/t/swap", "builtin:upper");
    assert_eq!(code, 200, "{body}");
}

/// A swap reads its file once, beneath the allowed directory: a directory
/// on the path swapped for a link to elsewhere between the check and the
/// load (the race a check by path then an open by path loses) loads
/// nothing from elsewhere, and a FIFO is refused at once without holding
/// up later swaps.
#[test]
fn a_swap_path_changed_under_it_never_loads_a_file_from_elsewhere() {
    let t = Tenants::start(
        &ONE.replace("[host]\n", "[host]\ncomponent_dirs = [\"guests\"]\n"),
        &["t"],
        &[],
    );
    let guests = t.dir.join("guests");
    std::fs::create_dir_all(guests.join("sub")).unwrap();
    std::fs::copy(repo_guest("echo"), guests.join("sub/echo.wasm")).unwrap();
    // Elsewhere, under the same name: a guest that answers in capitals.
    let elsewhere = scratch_dir("swap-race-elsewhere");
    std::fs::copy(repo_guest("upper"), elsewhere.join("echo.wasm")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, guests.join("alt")).unwrap();

    // `guests/sub` is a directory, then a link to elsewhere, then a
    // directory again, as fast as the kernel exchanges them.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (stop, guests) = (stop.clone(), guests.clone());
        std::thread::spawn(move || {
            use std::os::unix::ffi::OsStrExt;
            let path = |name: &str| {
                std::ffi::CString::new(guests.join(name).as_os_str().as_bytes()).unwrap()
            };
            let (sub, alt) = (path("sub"), path("alt"));
            let mut flips = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && flips < 50_000_000 {
                // SAFETY: two valid C strings, paths relative to no
                // directory descriptor.
                let done = unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        sub.as_ptr(),
                        libc::AT_FDCWD,
                        alt.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
                assert_eq!(done, 0, "{}", std::io::Error::last_os_error());
                flips += 1;
            }
            flips
        })
    };
    let target = guests.join("sub/echo.wasm").display().to_string();
    let (mut swapped, mut refused) = (0, 0);
    for _ in 0..30 {
        let (code, body) = t.post("/tenants/t/swap", &target);
        match code {
            200 => {
                swapped += 1;
                assert_eq!(
                    round_trip(&mut connect(t.addr("t")), b"in\n"),
                    "in\n",
                    "a swap loaded the guest from elsewhere: {body}"
                );
            }
            422 => refused += 1,
            _ => panic!("{code}: {body}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flips = flipper.join().unwrap();
    assert!(flips > 30, "the path changed only {flips} times");
    assert!(
        swapped + refused == 30,
        "{swapped} swapped, {refused} refused"
    );

    // A FIFO where a component should be: refused at once, and the next
    // swap is not held up.
    let fifo = guests.join("fifo.wasm");
    let fifo_c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo_c.as_ptr(), 0o600) }, 0);
    let (code, body) = t.post("/tenants/t/swap", &fifo.display().to_string());
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("not a regular file"), "{body}");
    let (code, body) = t.post("/tenants/t/swap", "builtin:upper");
    assert_eq!(code, 200, "{body}");
}

/// Sends `request` as raw bytes (a failed write is fine: the server may
/// answer and close first) and returns the status line's code, or `None`
/// if the server closed the connection without an answer.
fn raw(addr: std::net::SocketAddr, request: &[u8]) -> Option<u16> {
    let mut stream = connect(addr);
    let _ = stream.write_all(request);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
}

/// A deterministic stream of pseudo-random bytes (xorshift), so a failure
/// can be replayed.
struct Bytes(u64);

impl Bytes {
    fn next(&mut self) -> u8 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 24) as u8
    }
}

#[test]
fn malformed_oversized_slow_and_flooding_requests_are_bounded() {
    let t = Tenants::start(ONE, &["t"], &[]);
    let (admin, control) = (t.admin.unwrap(), t.control.unwrap());
    let before = generation(&t);
    // A body past 64 KiB: refused before it is read whole.
    let big = format!(
        "POST /tenants/t/swap HTTP/1.0\r\nAuthorization: Bearer {CONTROL_TOKEN}\r\nContent-Length: {}\r\n\r\n{}",
        1 << 20,
        "x".repeat(1 << 20)
    );
    assert_eq!(raw(control, big.as_bytes()), Some(413));
    // Methods and paths that are not served.
    assert_eq!(raw(admin, b"DELETE /status HTTP/1.0\r\n\r\n"), Some(405));
    assert_eq!(
        raw(admin, b"GET /../../etc/passwd HTTP/1.0\r\n\r\n"),
        Some(404)
    );
    assert_eq!(raw(control, b"BREW /reload HTTP/1.0\r\n\r\n"), Some(401));
    // Garbage, replayable from its seed: an HTTP error or a closed
    // connection every time, never a hang or a crash.
    let mut bytes = Bytes(0x5eed_1234);
    for round in 0..100 {
        let len = 1 + usize::from(bytes.next()) * 4;
        let mut request: Vec<u8> = (0..len).map(|_| bytes.next()).collect();
        request.extend_from_slice(b"\r\n\r\n");
        for addr in [admin, control] {
            let code = raw(addr, &request);
            assert!(
                code.is_none_or(|c| (400..500).contains(&c)),
                "round {round}: {code:?}"
            );
        }
    }
    assert_eq!(generation(&t), before, "nothing changed");
}

/// A TCP connection to `addr` from the loopback address `127.0.0.N`: a
/// client of its own, as the endpoints count clients.
fn connect_from(n: u8, addr: std::net::SocketAddr) -> std::net::TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from = std::net::SocketAddr::from(([127, 0, 0, n], 0));
    socket.bind(&from.into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
}

/// The status code of the answer to `request`, sent on `stream`.
fn answer(mut stream: std::net::TcpStream, request: &[u8]) -> Option<u16> {
    let _ = stream.write_all(request);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
}

#[test]
fn clients_holding_the_admin_slots_cannot_keep_the_readiness_probe_out() {
    let t = Tenants::start(ONE, &["t"], &[]);
    let admin = t.admin.unwrap();
    let unfinished = |from: u8| {
        let mut stream = connect_from(from, admin);
        let _ = stream.write_all(b"GET /status HTTP/1.1\r\n");
        stream
    };
    // One client gets 8 connections and no more, told so at once.
    let mut flood: Vec<std::net::TcpStream> = (0..8).map(|_| unfinished(2)).collect();
    assert_eq!(
        answer(connect_from(2, admin), b"GET /healthz HTTP/1.0\r\n\r\n"),
        Some(503),
        "a ninth connection from one client is refused"
    );
    // 100 clients from 13 addresses hold every slot with unfinished
    // headers, and keep coming back: each probe is still answered, on a
    // slot an idle connection gave up.
    for round in 0..5 {
        flood.extend((0..100).map(|i| unfinished(3 + i % 13)));
        let code = answer(connect_from(1, admin), b"GET /healthz HTTP/1.0\r\n\r\n");
        assert_eq!(code, Some(200), "probe {round} beside 100 held connections");
    }
    assert_seed_reply(&round_trip(&mut connect(t.addr("t")), b"served\n"));
    drop(flood);
}

#[test]
fn refused_control_requests_are_counted_all_and_logged_within_a_budget() {
    let t = Tenants::start(ONE, &["t"], &[]);
    let (admin, control) = (t.admin.unwrap(), t.control.unwrap());
    let long = format!("/tenants/{}/swap", "x".repeat(4000));
    let request = format!("POST {long} HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    let started = std::time::Instant::now();
    // 8 clients pipelining 250 unauthenticated requests each.
    let senders: Vec<_> = (0..8)
        .map(|_| {
            let burst = request.repeat(250);
            std::thread::spawn(move || {
                let mut stream = connect(control);
                let _ = stream.write_all(burst.as_bytes());
                let mut sink = Vec::new();
                let _ = stream.read_to_end(&mut sink);
            })
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    let series = "tcphost_control_requests_total{action=\"swap\",outcome=\"unauthorized\"}";
    let counted = wait_metric(admin, series, |n| n >= 2000.0);
    let seconds = started.elapsed().as_secs() + 1;
    let log = t.host.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(": refused, ")).collect();
    assert!(
        lines.len() as u64 <= 10 * seconds,
        "{} refusal lines in {seconds} s",
        lines.len()
    );
    assert!(
        lines
            .iter()
            .all(|l| l.len() < 1000 && l.contains("... (4014 bytes)")),
        "{lines:?}"
    );
    assert_eq!(counted, 2000.0);
}

#[test]
fn a_control_socket_another_host_serves_is_never_taken_over() {
    let dir = scratch_dir("control-taken");
    let socket = dir.join("control.sock");
    let manifest = |n: usize| {
        let path = dir.join(format!("tenants-{n}.toml"));
        std::fs::write(
            &path,
            format!(
                "[host]\ncontrol = \"unix:{}\"\n\n[[tenant]]\nname = \"t\"\ncomponent = \"builtin:seed\"\nlisten = [\"127.0.0.1:0\"]\n",
                socket.display()
            ),
        )
        .unwrap();
        path
    };
    let first = Host::start(&["--config".as_ref(), manifest(1).as_os_str()]);
    first.wait_for_log("control: listening on unix:");
    let (status, log) = run_host(&["--config".as_ref(), manifest(2).as_os_str()]);
    assert_eq!(status.code(), Some(69), "{log}");
    assert_clean_error(&log, "is in use by another process");
    assert!(socket.exists(), "the first host's socket is still there");
}

#[test]
fn a_swap_answers_why_it_changed_nothing_with_a_status_to_act_on() {
    let t = Tenants::start(ONE, &["t"], &[]);
    // No such tenant: 404, as for any unknown resource.
    let (code, body) = t.post("/tenants/nobody/swap", "builtin:echo");
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("no tenant named \"nobody\""), "{body}");
    // Whatever the body names (here a file no swap may load).
    let (code, body) = t.post("/tenants/nobody/swap", "/etc/passwd");
    assert_eq!(code, 404, "{body}");
    // A component that cannot be used: 422, the tenant as it was.
    let before = generation(&t);
    let (code, body) = t.post("/tenants/t/swap", "builtin:nothing-by-this-name");
    assert_eq!(code, 422, "{body}");
    assert_eq!(generation(&t), before);
    // One that can: 200.
    let (code, body) = t.post("/tenants/t/swap", "builtin:echo");
    assert_eq!(code, 200, "{body}");
}
