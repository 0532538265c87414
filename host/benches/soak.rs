//! Soak: the host under steady request/response load with connection churn
//! for a bounded time (10 minutes by default), sampling its resident
//! memory, open file descriptors and round trips per second, to show they
//! stay flat. Writes its table into BENCHMARKS.md (the `soak` section).
//!
//! `cargo bench -p host --bench soak` (set `SOAK_SECS` for another length).

mod support;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::{cpu_time, machine, rss_kib, scratch, write_section};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Clients doing round trips, each reconnecting every [`CHURN_EVERY`].
const BUSY: usize = 32;
/// Round trips a busy client makes on one connection before reconnecting.
const CHURN_EVERY: u64 = 200;
/// Idle connections held open, a tenth of them replaced every second.
const IDLE: usize = 500;
/// Time between samples.
const SAMPLE: Duration = Duration::from_secs(10);

/// Sockets of this machine in TIME_WAIT, from /proc/net/sockstat.
fn time_wait() -> u64 {
    std::fs::read_to_string("/proc/net/sockstat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("TCP:"))
        .and_then(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "tw")?;
            words.get(at + 1)?.parse().ok()
        })
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn main() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let duration = Duration::from_secs(secs);
    let dir = scratch("soak");
    let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let manifest = dir.join("soak.toml");
    std::fs::write(
        &manifest,
        format!(
            "[[tenant]]\nname = \"seed\"\ncomponent = \"builtin:seed\"\nlisten = [\"{addr}\"]\nlimits = {{ max_connections = 4000, idle_timeout = \"5m\" }}\n"
        ),
    )
    .unwrap();
    let mut host = Command::new(env!("CARGO_BIN_EXE_tcphost"))
        .arg("--config")
        .arg(&manifest)
        .arg("--no-cache")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = host.id();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rows = runtime.block_on(soak(addr, pid, duration));
    let _ = host.kill();
    let _ = host.wait();

    let mut report = String::new();
    writeln!(report, "Machine: {}.\n", machine()).unwrap();
    writeln!(
        report,
        "Soak: {} s; {BUSY} clients doing request/response round trips, each reconnecting every {CHURN_EVERY} round trips, beside {IDLE} idle connections of which a tenth are replaced every second; the load generator runs on one thread of the same machine. Sampled every {} s.\n",
        duration.as_secs(),
        SAMPLE.as_secs()
    )
    .unwrap();
    writeln!(
        report,
        "| time | round trips/s | host CPU per round trip | connections opened | TIME_WAIT sockets | host RSS | host open fds |\n| --- | --- | --- | --- | --- | --- | --- |"
    )
    .unwrap();
    for row in &rows {
        writeln!(
            report,
            "| {} s | {:.0} | {:.1} µs | {} | {} | {:.1} MiB | {} |",
            row.at.as_secs(),
            row.per_sec,
            row.cpu_us_per_trip,
            row.opened,
            row.time_wait,
            row.rss_kib as f64 / 1024.0,
            row.fds
        )
        .unwrap();
    }
    if let (Some(first), Some(last)) = (rows.get(1), rows.last()) {
        let max_rss = rows.iter().skip(1).map(|r| r.rss_kib).max().unwrap_or(0);
        let (min_fds, max_fds) = rows.iter().skip(1).fold((usize::MAX, 0), |(lo, hi), r| {
            (lo.min(r.fds), hi.max(r.fds))
        });
        writeln!(
            report,
            "\nFrom the second sample ({} s) to the last ({} s): RSS {:.1} → {:.1} MiB (highest {:.1}), open fds between {min_fds} and {max_fds}, round trips/s {:.0} → {:.0}; {} connections opened in all.",
            first.at.as_secs(),
            last.at.as_secs(),
            first.rss_kib as f64 / 1024.0,
            last.rss_kib as f64 / 1024.0,
            max_rss as f64 / 1024.0,
            first.per_sec,
            last.per_sec,
            last.opened
        )
        .unwrap();
    }
    print!("{report}");
    write_section("soak", &report);
}

/// One sample.
struct Row {
    at: Duration,
    per_sec: f64,
    cpu_us_per_trip: f64,
    opened: u64,
    time_wait: u64,
    rss_kib: u64,
    fds: usize,
}

async fn soak(addr: SocketAddr, pid: u32, duration: Duration) -> Vec<Row> {
    wait_answering(addr).await;
    let stop = Arc::new(AtomicBool::new(false));
    let round_trips = Arc::new(AtomicU64::new(0));
    let opened = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..BUSY {
        let (stop, round_trips, opened) = (stop.clone(), round_trips.clone(), opened.clone());
        tasks.push(tokio::spawn(async move {
            let mut buf = [0u8; 256];
            while !stop.load(Ordering::Relaxed) {
                let mut stream = tokio::net::TcpStream::connect(addr)
                    .await
                    .expect("connecting");
                opened.fetch_add(1, Ordering::Relaxed);
                stream.set_nodelay(true).unwrap();
                for _ in 0..CHURN_EVERY {
                    stream.write_all(b"ping\n").await.expect("sending");
                    let mut got = 0;
                    while !buf[..got].contains(&b'\n') {
                        let n = stream.read(&mut buf[got..]).await.expect("a reply");
                        assert!(n > 0, "the host closed a busy connection");
                        got += n;
                    }
                    round_trips.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    {
        let (stop, opened) = (stop.clone(), opened.clone());
        tasks.push(tokio::spawn(async move {
            let mut idle = Vec::with_capacity(IDLE);
            let mut next = 0;
            while !stop.load(Ordering::Relaxed) {
                let replace = if idle.len() < IDLE { IDLE } else { IDLE / 10 };
                for _ in 0..replace {
                    let stream = tokio::net::TcpStream::connect(addr)
                        .await
                        .expect("connecting");
                    opened.fetch_add(1, Ordering::Relaxed);
                    if idle.len() < IDLE {
                        idle.push(stream);
                    } else {
                        idle[next] = stream;
                        next = (next + 1) % IDLE;
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut last = 0;
    let mut last_cpu = cpu_time(pid);
    while started.elapsed() < duration {
        tokio::time::sleep(SAMPLE).await;
        let now = round_trips.load(Ordering::Relaxed);
        let cpu = cpu_time(pid);
        rows.push(Row {
            at: started.elapsed(),
            per_sec: (now - last) as f64 / SAMPLE.as_secs_f64(),
            cpu_us_per_trip: (cpu - last_cpu).as_secs_f64() * 1e6 / (now - last).max(1) as f64,
            opened: opened.load(Ordering::Relaxed),
            time_wait: time_wait(),
            rss_kib: rss_kib(pid),
            fds: open_fds(pid),
        });
        (last, last_cpu) = (now, cpu);
        let row = rows.last().unwrap();
        eprintln!(
            "{:>4} s: {:.0} round trips/s, {:.1} µs host CPU each, {} in TIME_WAIT, RSS {} KiB, {} fds",
            row.at.as_secs(),
            row.per_sec,
            row.cpu_us_per_trip,
            row.time_wait,
            row.rss_kib,
            row.fds
        );
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    rows
}

/// Waits (at most a minute) until the guest answers.
async fn wait_answering(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "{addr} never answered");
        if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
            let mut byte = [0u8; 1];
            if stream.write_all(b"ping\n").await.is_ok() && stream.read(&mut byte).await.is_ok() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
