//! Request/response throughput and latency, run with
//! `cargo bench -p host --bench throughput`; regenerates `BENCHMARKS.md`.
//!
//! Side by side in one run, on this machine: the host running the default
//! guest (the seed server) in its ready-set form, in its portable form
//! (standard `wasi:io/poll`) and in its WASI 0.3 form (component-model
//! async), the portable and 0.3 forms on stock `wasmtime run` (installed
//! with `cargo install` if missing), a native tokio server
//! giving the same reply, and the seed's Go server when `go` is installed. Each client sends a short
//! message and waits for the reply before sending the next. Cases: 1, 50 and
//! 1000 busy clients, and 50 busy beside 5000 idle connections. Also: the
//! host's memory per idle connection (10,000 of them), and the time from
//! exec to accepting connections, cold and with a warm compile cache.
//!
//! The load generator runs in this process on one thread; the servers get
//! the rest of the machine.
//!
//! `TCPHOST_BENCH_BASELINE=/path/to/an/older/host` adds that build of the
//! host to the same run (e.g. the last commit's, to show a change costs
//! nothing), as "host (baseline build)".

mod instances;
mod support;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::{cpu_time, machine, rss_kib, scratch};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WARM_UP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(3);
/// Each case is measured this many times per server; the report gives the
/// medians.
const ROUNDS: usize = 3;
const IDLE_FOR_MEMORY: usize = 10_000;

/// A server under test, killed when dropped.
struct Server {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    /// The host's admin endpoint, whose metrics count guest-host crossings
    /// (the host's rows only).
    admin: Option<SocketAddr>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }
}

/// A free port on 127.0.0.1.
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Waits until the server at `addr` answers a message (the host accepts
/// connections before its guest runs, so accepting is not enough); returns
/// how long that took.
fn wait_accepting(addr: SocketAddr, since: Instant) -> Duration {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "{addr} never answered");
        let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut byte = [0u8; 1];
        if stream.write_all(b"ping\n").is_ok() && matches!(stream.read(&mut byte), Ok(1)) {
            return since.elapsed();
        }
    }
}

/// The host running the default guest from a manifest, with room for the
/// connections the cases open. Logs go where the Go server's go: nowhere.
fn host(dir: &Path) -> Server {
    host_binary(
        dir,
        Path::new(env!("CARGO_BIN_EXE_tcphost")),
        "builtin:seed",
        "host + seed guest",
    )
}

/// The host with the seed guest's portable form (standard `wasi:io/poll`,
/// no ready sets).
fn host_portable(dir: &Path) -> Server {
    host_binary(
        dir,
        Path::new(env!("CARGO_BIN_EXE_tcphost")),
        "builtin:seed@p2-portable",
        "host + portable seed guest",
    )
}

/// The host with the seed guest's WASI 0.3 form (component-model async:
/// streams, one task per connection).
fn host_p3(dir: &Path) -> Server {
    host_binary(
        dir,
        Path::new(env!("CARGO_BIN_EXE_tcphost")),
        "builtin:seed@p3",
        "host + WASI 0.3 seed guest",
    )
}

/// The wasmtime CLI this host is built on, as `cargo install wasmtime-cli`
/// gives it (the run-time features only): found on the PATH or in cargo's
/// bin directory, installed there if missing (a benchmark may install; a
/// test may not). `None` if it cannot be had.
fn stock_wasmtime() -> Option<PathBuf> {
    const VERSION: &str = "48.0.8";
    let candidates = [
        PathBuf::from("wasmtime"),
        PathBuf::from(std::env::var_os("HOME")?).join(".cargo/bin/wasmtime"),
    ];
    let matches = |bin: &Path| {
        Command::new(bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(VERSION))
    };
    if let Some(found) = candidates.iter().find(|bin| matches(bin)) {
        return Some(found.clone());
    }
    eprintln!("installing wasmtime-cli {VERSION} for the stock-runtime row (minutes, once)");
    let installed = Command::new("cargo")
        .args(["install", "--locked", &format!("wasmtime-cli@{VERSION}")])
        .args(["--no-default-features", "--features"])
        .arg("run,cranelift,component-model,component-model-async,parallel-compilation,pooling-allocator,cache")
        .status()
        .is_ok_and(|s| s.success());
    (installed && matches(&candidates[1])).then(|| candidates[1].clone())
}

/// The seed guest's portable form on stock `wasmtime run`, with the network
/// inherited (the stock runtime's only way to let a guest listen).
fn wasmtime_portable(wasmtime: &Path) -> Server {
    let addr = free_addr();
    let guest = Path::new(env!("TCPHOST_PORTABLE_GUEST_DIR")).join("seed.wasm");
    let child = Command::new(wasmtime)
        .args(["run", "-S", "inherit-network", "--env"])
        .arg(format!("LISTEN_ADDR={addr}"))
        .arg(&guest)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_accepting(addr, Instant::now());
    Server {
        name: "stock wasmtime + portable seed guest",
        child,
        addr,
        admin: None,
    }
}

/// The seed guest's WASI 0.3 form on stock `wasmtime run`, with the
/// network inherited and WASI 0.3 switched on.
fn wasmtime_p3(wasmtime: &Path) -> Server {
    let addr = free_addr();
    let guest = Path::new(env!("TCPHOST_P3_GUEST_DIR")).join("seed.wasm");
    let child = Command::new(wasmtime)
        .args(["run", "-S", "inherit-network", "-S", "p3", "-W"])
        .args(["component-model-async", "--env"])
        .arg(format!("LISTEN_ADDR={addr}"))
        .arg(&guest)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_accepting(addr, Instant::now());
    Server {
        name: "stock wasmtime + WASI 0.3 seed guest",
        child,
        addr,
        admin: None,
    }
}

/// [`host`] with the host binary `binary`, named `name` in the report.
fn host_binary(dir: &Path, binary: &Path, component: &str, name: &'static str) -> Server {
    let addr = free_addr();
    let admin = free_addr();
    let manifest = dir.join(format!("bench-{}.toml", addr.port()));
    std::fs::write(
        &manifest,
        format!(
            "[host]\ncache_dir = \"cache\"\nadmin = \"{admin}\"\n\n[[tenant]]\nname = \"seed\"\ncomponent = \"{component}\"\nlisten = [\"{addr}\"]\nlimits = {{ max_connections = 20000 }}\n"
        ),
    )
    .unwrap();
    let child = Command::new(binary)
        .arg("--config")
        .arg(&manifest)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_accepting(addr, Instant::now());
    Server {
        name,
        child,
        addr,
        admin: Some(admin),
    }
}

fn native() -> Server {
    native_server("serve-native", "native tokio")
}

/// Native tokio logging each connection and payload as the host logs the
/// seed guest's lines (its subscriber, its sink): the fair comparison for
/// a guest that logs every payload.
fn native_logging() -> Server {
    native_server("serve-native-logging", "native tokio, logging each payload")
}

fn native_server(mode: &str, name: &'static str) -> Server {
    let addr = free_addr();
    let child = Command::new(std::env::current_exe().unwrap())
        .args([mode, &addr.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_accepting(addr, Instant::now());
    Server {
        name,
        child,
        addr,
        admin: None,
    }
}

fn go_seed(dir: &Path) -> Option<Server> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/seed-server.go");
    let binary = dir.join("seed-server");
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(&source)
        .env("GOCACHE", dir.join("gocache"))
        .env("GOFLAGS", "-mod=mod")
        .status()
        .ok()?
        .success();
    if !built {
        return None;
    }
    let addr = free_addr();
    let child = Command::new(&binary)
        .arg(addr.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    wait_accepting(addr, Instant::now());
    Some(Server {
        name: "seed's Go server",
        child,
        addr,
        admin: None,
    })
}

/// The native baseline: tokio, a task per connection, the seed's reply.
fn serve_native(addr: &str, logging: bool) {
    if logging {
        // The host's own subscriber and sink, as it logs the seed guest's
        // lines.
        tracing_subscriber::fmt()
            .with_writer(host::wasi::stdio::LogWriter)
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_ansi(false)
            .init();
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        loop {
            let (mut stream, peer) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                if logging {
                    tracing::info!(tenant = "native", "connected: {peer}");
                }
                let mut buf = [0u8; 2048];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => {
                            if logging {
                                tracing::info!(tenant = "native", "disconnected: {peer}");
                            }
                            return;
                        }
                        Ok(n) => {
                            // Each payload, as the seed guest logs it.
                            if logging {
                                let data = String::from_utf8_lossy(&buf[..n]);
                                tracing::info!(
                                    tenant = "native",
                                    "received {n} bytes from {peer}: {}",
                                    data.escape_debug()
                                );
                            }
                            let n: u32 = rand_below_100();
                            if stream
                                .write_all(format!("rust socket server : {n}\n").as_bytes())
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
}

/// A cheap random number below 100 (xorshift; the baseline must not be
/// slowed by a heavier generator than the guest's).
fn rand_below_100() -> u32 {
    use std::cell::Cell;
    thread_local!(static STATE: Cell<u64> = Cell::new(0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id())));
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x % 100) as u32
    })
}

/// Results of one case against one server.
#[derive(Clone)]
struct Outcome {
    per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    /// Round trips completed by the least served client.
    fewest: usize,
    /// Round trips completed by the median client.
    median_client: usize,
    /// The server's CPU time (user + system) per round trip, in µs.
    cpu_us: f64,
    /// Calls between guest and host per request, in the host's own count
    /// (NaN for other servers).
    crossings: f64,
}

impl Outcome {
    /// A round in which the server could not be loaded at all (it refused
    /// or dropped the connections: it had stopped).
    fn failed() -> Outcome {
        Outcome {
            per_sec: 0.0,
            p50_us: f64::NAN,
            p99_us: f64::NAN,
            fewest: 0,
            median_client: 0,
            cpu_us: f64::NAN,
            crossings: f64::NAN,
        }
    }
}

/// The medians of one case against one server over the rounds.
struct Summary {
    per_sec: f64,
    per_sec_min: f64,
    per_sec_max: f64,
    p50_us: f64,
    p99_us: f64,
    fewest: f64,
    median_client: f64,
    cpu_us: f64,
    crossings: f64,
}

impl Summary {
    fn of(rounds: &[Outcome]) -> Summary {
        let median = |f: fn(&Outcome) -> f64| {
            let mut v: Vec<f64> = rounds.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let rates = rounds.iter().map(|o| o.per_sec);
        Summary {
            per_sec: median(|o| o.per_sec),
            per_sec_min: rates.clone().fold(f64::INFINITY, f64::min),
            per_sec_max: rates.fold(0.0, f64::max),
            p50_us: median(|o| o.p50_us),
            p99_us: median(|o| o.p99_us),
            fewest: median(|o| o.fewest as f64),
            median_client: median(|o| o.median_client as f64),
            cpu_us: median(|o| o.cpu_us),
            crossings: median(|o| o.crossings),
        }
    }
}

/// `busy` clients doing round trips beside `idle` silent connections, to
/// the server at `addr`, process `pid` (0: its CPU time is not read).
fn load(addr: SocketAddr, pid: u32, busy: usize, idle: usize) -> Outcome {
    load_spread(&[addr], pid, busy, idle, None)
}

/// The message each busy client sends.
const PING: &[u8] = b"ping\n";

/// The host's counts of guest-host crossings and of requests received,
/// from its admin endpoint's metrics (`admin`), for the tenant `seed`.
fn crossings_and_requests(admin: SocketAddr) -> Option<(f64, f64)> {
    let text = ureq::get(format!("http://{admin}/metrics"))
        .call()
        .ok()?
        .into_body()
        .read_to_string()
        .ok()?;
    let value = |metric: &str| {
        text.lines()
            .find(|l| l.starts_with(metric) && l.contains("tenant=\"seed\""))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    let crossings = value("tcphost_guest_host_crossings_total{")?;
    let received = value("tcphost_received_bytes_total{")?;
    Some((crossings, received / PING.len() as f64))
}

/// [`load`] with the clients spread over `addrs` in turn (client `i`
/// connects to `addrs[i % len]`); with `admin`, the host's crossings per
/// request over the measured time are read from its metrics there.
fn load_spread(
    addrs: &[SocketAddr],
    pid: u32,
    busy: usize,
    idle: usize,
    admin: Option<SocketAddr>,
) -> Outcome {
    let addr = addrs[0];
    let addrs = addrs.to_vec();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut held = Vec::with_capacity(idle);
        for _ in 0..idle {
            held.push(
                tokio::net::TcpStream::connect(addr)
                    .await
                    .expect("an idle connection"),
            );
        }
        let measuring = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::with_capacity(busy);
        // Each client's latencies, kept where a client the server stopped
        // answering (starved) cannot take them with it.
        let mut measured = Vec::with_capacity(busy);
        for i in 0..busy {
            let (measuring, stop) = (measuring.clone(), stop.clone());
            let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
            measured.push(latencies.clone());
            let mut stream = tokio::net::TcpStream::connect(addrs[i % addrs.len()])
                .await
                .expect("a busy connection");
            stream.set_nodelay(true).unwrap();
            clients.push(tokio::spawn(async move {
                let mut buf = [0u8; 256];
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    stream.write_all(PING).await.expect("sending");
                    let mut got = 0;
                    while !buf[..got].contains(&b'\n') {
                        let n = stream.read(&mut buf[got..]).await.expect("a reply");
                        assert!(n > 0, "the server closed a busy connection");
                        got += n;
                    }
                    if measuring.load(Ordering::Relaxed) {
                        let took = started.elapsed().as_secs_f64() * 1e6;
                        latencies.lock().unwrap().push(took);
                    }
                }
            }));
        }
        tokio::time::sleep(WARM_UP).await;
        measuring.store(true, Ordering::Relaxed);
        let cpu_before = cpu_time(pid);
        // A blocking read of a few ms, at the edges of the measured time.
        let crossed_before = admin.and_then(crossings_and_requests);
        tokio::time::sleep(MEASURE).await;
        measuring.store(false, Ordering::Relaxed);
        let cpu = cpu_time(pid).saturating_sub(cpu_before);
        let crossings = match (crossed_before, admin.and_then(crossings_and_requests)) {
            (Some((c0, r0)), Some((c1, r1))) if r1 > r0 => (c1 - c0) / (r1 - r0),
            _ => f64::NAN,
        };
        stop.store(true, Ordering::Relaxed);
        // A client still waiting for a reply after this is one the server
        // does not serve: it is left behind, not waited for.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        for client in clients {
            if let Ok(joined) = tokio::time::timeout_at(deadline, client).await {
                joined.unwrap();
            }
        }
        let mut all = Vec::new();
        let mut per_client = Vec::with_capacity(busy);
        for latencies in measured {
            let latencies = latencies.lock().unwrap();
            per_client.push(latencies.len());
            all.extend(latencies.iter().copied());
        }
        per_client.sort_unstable();
        drop(held);
        all.sort_by(f64::total_cmp);
        let at = |p: f64| {
            // No round trip at all: the server served nobody.
            all.get(((all.len() as f64 - 1.0) * p).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        Outcome {
            cpu_us: if all.is_empty() {
                f64::NAN
            } else {
                cpu.as_secs_f64() * 1e6 / all.len() as f64
            },
            per_sec: all.len() as f64 / MEASURE.as_secs_f64(),
            p50_us: at(0.5),
            p99_us: at(0.99),
            fewest: per_client[0],
            median_client: per_client[per_client.len() / 2],
            crossings,
        }
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve-native") => return serve_native(&args[2], false),
        Some("serve-native-logging") => return serve_native(&args[2], true),
        // `load ADDR BUSY IDLE`: one case against a server started by hand.
        Some("python-start-up") => {
            // Only the Python example's start-up and swaps, printed.
            let mut report = String::new();
            python_start_up(&mut report);
            print!("{report}");
            return;
        }
        // `instances`: how a tenant scales over its instances (BENCHMARKS.md,
        // section "instances").
        Some("instances") => return instances::run(),
        Some("load") => {
            let o = load(
                args[2].parse().unwrap(),
                0,
                args[3].parse().unwrap(),
                args[4].parse().unwrap(),
            );
            println!(
                "{:.0} round trips/s, p50 {:.0} µs, p99 {:.0} µs, per client: fewest {} median {}",
                o.per_sec, o.p50_us, o.p99_us, o.fewest, o.median_client
            );
            return;
        }
        _ => {}
    }
    let dir = scratch("run");
    let mut report = String::new();
    writeln!(report, "Machine: {}.\n", machine()).unwrap();
    writeln!(report, "Request/response: each client sends `ping\\n` and waits for the one-line reply before the next; {}s measured after {}s of warm-up, {ROUNDS} times per case and server, the servers taking turns; each figure is the median of the {ROUNDS}, the range that of the throughput. The load generator runs on one thread (a current-thread tokio runtime, one task per client) of the same machine. CPU is the server process's user + system time over the measured 3s (from /proc/PID/stat, 10 ms ticks) divided by the round trips completed: it moves less than throughput on this noisy machine.\n", MEASURE.as_secs(), WARM_UP.as_secs()).unwrap();

    let cases: [(&str, usize, usize); 4] = [
        ("1 busy", 1, 0),
        ("50 busy", 50, 0),
        ("1000 busy", 1000, 0),
        ("50 busy + 5000 idle", 50, 5000),
    ];
    // All servers run throughout (idle ones cost nothing) and take turns,
    // case by case, in every round, so a drift in the machine's speed
    // during the run falls on all of them alike.
    let mut servers = vec![
        native(),
        native_logging(),
        host(&dir),
        host_portable(&dir),
        host_p3(&dir),
    ];
    if let Some(baseline) = std::env::var_os("TCPHOST_BENCH_BASELINE") {
        servers.push(host_binary(
            &dir,
            Path::new(&baseline),
            "builtin:seed",
            "host (baseline build)",
        ));
    }
    match stock_wasmtime() {
        Some(wasmtime) => {
            servers.push(wasmtime_portable(&wasmtime));
            servers.push(wasmtime_p3(&wasmtime));
        }
        None => eprintln!("no wasmtime CLI: the stock-runtime row is left out"),
    }
    match go_seed(&dir) {
        Some(go) => servers.push(go),
        None => eprintln!("no Go toolchain: the seed's Go server is left out"),
    }
    let mut outcomes: Vec<Vec<Vec<Outcome>>> = servers
        .iter()
        .map(|_| cases.iter().map(|_| Vec::new()).collect())
        .collect();
    let mut stopped = vec![false; servers.len()];
    let mut failures = String::new();
    for round in 1..=ROUNDS {
        for (c, (label, busy, idle)) in cases.iter().enumerate() {
            for (s, server) in servers.iter_mut().enumerate() {
                eprintln!("round {round}/{ROUNDS}: {}: {label}", server.name);
                // A server that stops serving (a guest that traps) fails this
                // round and every later one, and is stopped so that it
                // cannot disturb the others; the benchmark goes on.
                let outcome = if stopped[s] {
                    Outcome::failed()
                } else {
                    let (addr, pid, admin) = (server.addr, server.child.id(), server.admin);
                    std::panic::catch_unwind(|| load_spread(&[addr], pid, *busy, *idle, admin))
                        .unwrap_or_else(|_| Outcome::failed())
                };
                if outcome.per_sec == 0.0 && !stopped[s] {
                    stopped[s] = true;
                    let _ = server.child.kill();
                    writeln!(
                        failures,
                        "\n{} stopped serving in round {round}, {label}; its later rounds count as failed (0 round trips).",
                        server.name
                    )
                    .unwrap();
                }
                outcomes[s][c].push(outcome);
            }
        }
    }

    writeln!(
        report,
        "| case | server | round trips/s | range | vs native | CPU per round trip | CPU vs native | crossings per round trip | p50 | p99 | p99 vs native | per client: fewest / median |"
    )
    .unwrap();
    writeln!(
        report,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    .unwrap();
    for (c, (label, _, _)) in cases.iter().enumerate() {
        let native = Summary::of(&outcomes[0][c]);
        for (s, server) in servers.iter().enumerate() {
            // Rounds the server failed (it had stopped) are left out of its
            // figures and said in its name.
            let served: Vec<Outcome> = outcomes[s][c]
                .iter()
                .filter(|o| o.per_sec > 0.0)
                .cloned()
                .collect();
            if served.is_empty() {
                writeln!(
                    report,
                    "| {label} | {} | failed | | | | | | | | | |",
                    server.name
                )
                .unwrap();
                continue;
            }
            let name = if served.len() < ROUNDS {
                format!("{} ({} of {ROUNDS} rounds)", server.name, served.len())
            } else {
                server.name.to_owned()
            };
            let o = Summary::of(&served);
            writeln!(
                report,
                "| {label} | {} | {:.0} | {:.0}-{:.0} | {:.2}x | {:.1} µs | {:.2}x | {} | {:.0} µs | {:.0} µs | {:.2}x | {:.0} / {:.0} |",
                name,
                o.per_sec,
                o.per_sec_min,
                o.per_sec_max,
                o.per_sec / native.per_sec,
                o.cpu_us,
                o.cpu_us / native.cpu_us,
                if o.crossings.is_nan() {
                    String::new()
                } else {
                    format!("{:.1}", o.crossings)
                },
                o.p50_us,
                o.p99_us,
                o.p99_us / native.p99_us,
                o.fewest,
                o.median_client
            )
            .unwrap();
        }
    }
    writeln!(report, "\nPer client: round trips completed in the {}s by the least served busy client and by the median one. A server that serves some clients over and over while others wait shows here, not in the percentiles, which count only completed round trips.", MEASURE.as_secs()).unwrap();
    report.push_str(&failures);
    drop(servers);

    eprint!("{report}");

    // Memory per idle connection, host and guest together.
    for server in [host(&dir), host_p3(&dir)] {
        std::thread::sleep(Duration::from_millis(500));
        let before = server.rss_kib();
        let addr = server.addr;
        let held: Vec<std::net::TcpStream> = (0..IDLE_FOR_MEMORY)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        // Let the guest accept them all.
        std::thread::sleep(Duration::from_secs(3));
        let after = server.rss_kib();
        drop(held);
        writeln!(
            report,
            "\nMemory, {}: the host's RSS went from {:.1} MiB to {:.1} MiB holding {IDLE_FOR_MEMORY} idle connections: {:.1} KiB per connection, host and guest together.",
            server.name,
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            (after as f64 - before as f64) / IDLE_FOR_MEMORY as f64
        )
        .unwrap();
    }
    report.push('\n');

    // Exec to accepting connections, one tenant from the command line.
    let cache = scratch("cache");
    let start = || start_up(None, &cache);
    let (cold, compiled) = start();
    assert!(compiled, "the first start compiles");
    eprint!("{report}");
    let warm: Vec<Duration> = (0..5).map(|_| start().0).collect();
    let best = warm.iter().min().unwrap();
    let worst = warm.iter().max().unwrap();
    writeln!(
        report,
        "Start-up, exec to the first accepted connection: {:.0} ms cold (compiling the guest), {:.1} to {:.1} ms with a warm compile cache (5 starts).\n",
        cold.as_secs_f64() * 1e3,
        best.as_secs_f64() * 1e3,
        worst.as_secs_f64() * 1e3
    )
    .unwrap();
    python_start_up(&mut report);

    print!("{report}");
    support::write_section("results", &report);
}

/// Exec to the first answer of `guest` (the built-in seed if `None`),
/// one tenant from the command line, with the compile cache in `cache`;
/// and whether the host compiled the guest.
fn start_up(guest: Option<&Path>, cache: &Path) -> (Duration, bool) {
    {
        let addr = free_addr();
        let started = Instant::now();
        let mut command = Command::new(env!("CARGO_BIN_EXE_tcphost"));
        if let Some(guest) = guest {
            command.arg(guest);
        }
        let mut child = Killed(
            command
                .args(["--listen", &addr.to_string(), "--cache-dir"])
                .arg(cache)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let took = wait_accepting(addr, started);
        let _ = child.0.kill();
        let log = BufReader::new(child.0.stderr.take().unwrap())
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
            .join("\n");
        (took, log.contains("compiled component"))
    }
}

/// The Python example (guest/examples/python: CPython under
/// componentize-py, an asyncio server, about 21 MB): exec to its first
/// answer, cold and warm, and a live swap to it from the seed, cold and
/// warm (request to the first answer from the new version).
fn python_start_up(report: &mut String) {
    let python = test_guests::example("python");
    let size = std::fs::metadata(&python).unwrap().len();
    let cache = scratch("python-cache");
    let (cold, compiled) = start_up(Some(&python), &cache);
    assert!(compiled, "the first start compiles");
    let warm: Vec<Duration> = (0..5).map(|_| start_up(Some(&python), &cache).0).collect();

    // Live swaps through the control endpoint (a Unix socket).
    let dir = scratch("python-swap");
    let (addr, control) = (free_addr(), dir.join("control.sock"));
    std::fs::write(
        dir.join("swap.toml"),
        format!(
            "[host]\ncache_dir = \"cache\"\ncontrol = \"unix:{}\"\ncomponent_dirs = [\"{}\"]\n\n[[tenant]]\nname = \"t\"\ncomponent = \"builtin:seed\"\nlisten = [\"{addr}\"]\n",
            control.display(),
            python.parent().unwrap().display()
        ),
    )
    .unwrap();
    let host = Killed(
        Command::new(env!("CARGO_BIN_EXE_tcphost"))
            .arg("--config")
            .arg(dir.join("swap.toml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_accepting(addr, Instant::now());
    let swap = |to: &str, answer: &str| -> Duration {
        let started = Instant::now();
        let (control, to) = (control.clone(), to.to_owned());
        let request = std::thread::spawn(move || post_unix(&control, "/tenants/t/swap", &to));
        let took = first_answer_starting(addr, answer, started);
        let status = request.join().unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        took
    };
    let python_path = python.display().to_string();
    let swap_cold = swap(&python_path, "python");
    swap("builtin:seed", "rust");
    let swap_warm = swap(&python_path, "python");
    drop(host);

    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    writeln!(
        report,
        "Start-up of the Python example ({:.1} MB, CPython under componentize-py, an asyncio server), exec to its first answer: {:.0} ms cold (compiling it), {:.0} to {:.0} ms with a warm compile cache (5 starts). A live swap from the seed to it, request to the first answer from the new version: {:.0} ms cold, {:.0} ms warm.\n",
        size as f64 / 1e6,
        ms(&cold),
        ms(warm.iter().min().unwrap()),
        ms(warm.iter().max().unwrap()),
        ms(&swap_cold),
        ms(&swap_warm),
    )
    .unwrap();
}

/// A child process killed (and reaped) when dropped, also when a
/// measurement panics.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `POST path` with `body` to the control endpoint at the Unix socket
/// `socket`; the answer (at most 120 s are waited for).
fn post_unix(socket: &Path, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: tcphost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// Connects to `addr` again and again until a reply starts with `prefix`
/// (the new version answers); how long since `since`.
fn first_answer_starting(addr: SocketAddr, prefix: &str, since: Instant) -> Duration {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "{addr} never answered {prefix}");
        if let Ok(mut stream) = std::net::TcpStream::connect(addr) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reply = [0u8; 64];
            if stream.write_all(b"ping\n").is_ok()
                && let Ok(n) = stream.read(&mut reply)
                && reply[..n].starts_with(prefix.as_bytes())
            {
                return since.elapsed();
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
