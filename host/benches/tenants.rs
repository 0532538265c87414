//! Multi-tenant benchmark, run with `cargo bench -p host --bench tenants`.
//!
//! Measures, on this machine, with the release host:
//! - resident memory per idle tenant, from 1 and 100 tenants of the seed guest;
//! - time from exec to all 100 tenants listening, with a cold and with a warm
//!   compile cache, with the default allocator and with the pooling allocator;
//! - a neighbour's round-trip latency (p50, p99) alone, and while a hostile
//!   tenant computes without end beside it;
//! - live swaps under load: from the swap request to the first reply from
//!   the new version, and the load's errors during the swaps.
//!
//! Prints a Markdown report (also written to `target/bench-tenants.md`).

mod support;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::{machine, rss_kib, scratch};

const TENANTS: usize = 100;
const ROUND_TRIPS: usize = 5000;
const TIMEOUT: Duration = Duration::from_secs(120);

/// A running host whose stderr lines arrive on a channel.
struct Host {
    child: Child,
    lines: mpsc::Receiver<String>,
    started: Instant,
}

impl Host {
    fn start(manifest: &Path) -> Host {
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tcphost"))
            .arg("--config")
            .arg(manifest)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the host starts");
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Host {
            child,
            lines,
            started,
        }
    }

    /// Waits for `n` lines containing `marker`; returns the time since exec
    /// and, from each line, the word before the marker and the address after.
    fn wait_for(&self, marker: &str, n: usize) -> (Duration, Vec<(String, SocketAddr)>) {
        let mut addrs = Vec::new();
        let deadline = Instant::now() + TIMEOUT;
        while addrs.len() < n {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("only {} of {n} {marker:?} lines", addrs.len()));
            // The guests' own log lines (target `guest`) say "listening on" too.
            if line.contains(" guest: ") {
                continue;
            }
            if let Some((before, after)) = line.split_once(marker) {
                let name = before.split_whitespace().last().unwrap_or("").to_owned();
                addrs.push((
                    name,
                    after.split_whitespace().next().unwrap().parse().unwrap(),
                ));
            }
        }
        (self.started.elapsed(), addrs)
    }

    fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn manifest(dir: &Path, tenants: usize, pooling: bool, host: &str, extra: &str) -> PathBuf {
    let mut text =
        format!("[host]\ncache_dir = \"cache\"\npooling_allocator = {pooling}\n{host}\n");
    for i in 0..tenants {
        writeln!(text, "[[tenant]]\nname = \"t{i:03}\"\ncomponent = \"builtin:seed\"\nlisten = [\"127.0.0.1:0\"]\n").unwrap();
    }
    text += extra;
    let path = dir.join(format!("tenants-{tenants}-{pooling}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The neighbour's sorted latencies alone, then beside a tenant computing
/// forever, on a host with `threads` guest threads (`None`: the default).
fn neighbour(threads: Option<usize>) -> (Vec<f64>, Vec<f64>) {
    let dir = scratch(&format!("neighbour-{threads:?}"));
    let hostile = test_guests::path("hostile");
    let extra = format!(
        "[[tenant]]\nname = \"hostile\"\ncomponent = \"{}\"\nlisten = [\"127.0.0.1:0\"]\nlimits = {{ cpu_limit = \"1h\" }}\n",
        hostile.display()
    );
    let setting = threads.map_or(String::new(), |n| format!("guest_threads = {n}\n"));
    let host = Host::start(&manifest(&dir, 1, false, &setting, &extra));
    let (_, addrs) = host.wait_for(": listening on ", 2);
    let addr_of = |name: &str| {
        addrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .unwrap()
    };
    let (neighbour, hostile_addr) = (addr_of("t000"), addr_of("hostile"));
    round_trips(neighbour, 500); // warm-up
    let alone = round_trips(neighbour, ROUND_TRIPS);
    let mut spin = TcpStream::connect(hostile_addr).unwrap();
    spin.write_all(b"spin\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let beside = round_trips(neighbour, ROUND_TRIPS);
    (alone, beside)
}

/// Sequential round trips to the seed guest at `addr`; latencies in µs.
fn round_trips(addr: SocketAddr, n: usize) -> Vec<f64> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 64];
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        stream.write_all(b"ping\n").unwrap();
        let mut got = 0;
        while !buf[..got].contains(&b'\n') {
            got += stream.read(&mut buf[got..]).unwrap();
        }
        latencies.push(t.elapsed().as_secs_f64() * 1e6);
    }
    latencies.sort_by(f64::total_cmp);
    latencies
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let mut report = String::new();
    writeln!(report, "Machine: {}.\n", machine()).unwrap();

    // Start-up and memory, with and without the pooling allocator.
    writeln!(report, "| allocator | 100 tenants listening, cold cache | warm cache | RSS, 1 tenant | RSS, 100 tenants | per idle tenant |").unwrap();
    writeln!(report, "| --- | --- | --- | --- | --- | --- |").unwrap();
    for pooling in [false, true] {
        let dir = scratch(if pooling { "pool" } else { "default" });
        let many = manifest(&dir, TENANTS, pooling, "", "");
        let cold = {
            let host = Host::start(&many);
            host.wait_for(": listening on ", TENANTS).0
        };
        let (warm, rss_many) = {
            let host = Host::start(&many);
            let (t, _) = host.wait_for(": listening on ", TENANTS);
            std::thread::sleep(Duration::from_secs(1));
            (t, host.rss_kib())
        };
        let rss_one = {
            let host = Host::start(&manifest(&dir, 1, pooling, "", ""));
            host.wait_for(": listening on ", 1);
            std::thread::sleep(Duration::from_secs(1));
            host.rss_kib()
        };
        let per = (rss_many as f64 - rss_one as f64) / (TENANTS - 1) as f64;
        writeln!(
            report,
            "| {} | {:.0} ms | {:.0} ms | {:.1} MiB | {:.1} MiB | {per:.0} KiB |",
            if pooling {
                "pooling"
            } else {
                "on demand (default)"
            },
            cold.as_secs_f64() * 1e3,
            warm.as_secs_f64() * 1e3,
            rss_one as f64 / 1024.0,
            rss_many as f64 / 1024.0,
        )
        .unwrap();
        eprint!("{report}");
    }

    // A neighbour's latency, alone and beside a tenant computing forever:
    // with a guest thread each (the default, one per core), then sharing one.
    writeln!(
        report,
        "\nNeighbour round trips ({ROUND_TRIPS} sequential, one client):\n"
    )
    .unwrap();
    writeln!(report, "| guest threads | neighbour | p50 | p99 | max |").unwrap();
    writeln!(report, "| --- | --- | --- | --- | --- |").unwrap();
    let mut ratios = Vec::new();
    for threads in [None, Some(1)] {
        let (alone, beside) = neighbour(threads);
        let label = threads.map_or("one per core".to_owned(), |n| n.to_string());
        for (case, l) in [("alone", &alone), ("beside a tenant spinning", &beside)] {
            writeln!(
                report,
                "| {label} | {case} | {:.0} µs | {:.0} µs | {:.0} µs |",
                percentile(l, 0.5),
                percentile(l, 0.99),
                l.last().unwrap()
            )
            .unwrap();
        }
        ratios.push(format!(
            "{label}: {:.2}x",
            percentile(&beside, 0.99) / percentile(&alone, 0.99)
        ));
    }
    writeln!(
        report,
        "\np99 beside the spinning tenant / p99 alone, by guest threads: {}",
        ratios.join("; ")
    )
    .unwrap();

    swaps(&mut report);

    print!("{report}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-tenants.md");
    std::fs::write(&out, &report).unwrap();
}

/// `POST path` with `body` to the admin endpoint; returns the status line.
fn post(admin: SocketAddr, path: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(admin).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.lines().next().unwrap_or("").to_owned()
}

/// The reply to `message` on a fresh connection.
fn fresh(addr: SocketAddr, message: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(message.as_bytes())?;
    let mut buf = [0u8; 64];
    let mut got = 0;
    while !buf[..got].contains(&b'\n') {
        let n = stream.read(&mut buf[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(String::from_utf8_lossy(&buf[..got]).into_owned())
}

const SWAPS: usize = 20;

fn swaps(report: &mut String) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let dir = scratch("swap");
    let manifest = dir.join("swap.toml");
    std::fs::write(
        &manifest,
        "[host]\nadmin = \"127.0.0.1:0\"\ncache_dir = \"cache\"\n\n[[tenant]]\nname = \"live\"\ncomponent = \"builtin:echo\"\nlisten = [\"127.0.0.1:0\"]\nlimits = { drain_timeout = \"60s\" }\n",
    )
    .unwrap();
    let host = Host::start(&manifest);
    let (_, admin) = host.wait_for("admin: listening on ", 1);
    let (_, addrs) = host.wait_for(": listening on ", 1);
    let (admin, addr) = (admin[0].1, addrs[0].1);

    // Load: four clients, each round trip on a fresh connection, so every
    // swap finds connections arriving.
    let stop = Arc::new(AtomicBool::new(false));
    let (requests, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, requests, errors) = (stop.clone(), requests.clone(), errors.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..5 {
                        match fresh(addr, "ping\n") {
                            Ok(r) if r == "ping\n" || r == "PING\n" => {
                                requests.fetch_add(1, Ordering::Relaxed)
                            }
                            _ => errors.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut latencies = Vec::with_capacity(SWAPS);
    for i in 0..SWAPS {
        let (to, expect) = if i % 2 == 0 {
            ("builtin:upper", "HELLO\n")
        } else {
            ("builtin:echo", "hello\n")
        };
        let started = Instant::now();
        let status = post(admin, "/tenants/live/swap", to);
        assert!(status.contains("200"), "swap {i}: {status}");
        while fresh(addr, "hello\n").ok().as_deref() != Some(expect) {}
        latencies.push(started.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    load.into_iter().for_each(|t| t.join().unwrap());
    latencies.sort_by(f64::total_cmp);
    writeln!(
        report,
        "\nLive swaps ({SWAPS}, echo <-> upper, four clients opening fresh connections throughout):\n"
    )
    .unwrap();
    writeln!(report, "| swap request to first reply from the new version, p50 | max | requests served during the swaps | errors |").unwrap();
    writeln!(report, "| --- | --- | --- | --- |").unwrap();
    writeln!(
        report,
        "| {:.1} ms | {:.1} ms | {} | {} |",
        percentile(&latencies, 0.5),
        latencies.last().unwrap(),
        requests.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed)
    )
    .unwrap();
}
