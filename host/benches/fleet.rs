//! The fleet path, measured: `cargo bench -p host --bench fleet` (needs
//! Debian's `docker-registry`, and the Python example:
//! `TCPHOST_EXAMPLES=1`, or a component in `TCPHOST_BENCH_COMPONENT`).
//!
//! With the release host and a registry on 127.0.0.1, for the 21 MB Python
//! example pushed in the Wasm OCI layout, the time from exec to the first
//! answer:
//! - pulled cold (empty store, empty compile cache);
//! - from the store (nothing pulled; compiled again);
//! - from the store with a warm compile cache;
//!
//! and a swap to a new digest under load, triggered as on Kubernetes (the
//! watched manifest rewritten): from the rewrite to the new version's
//! first answer, and the load's failed round trips meanwhile.
//!
//! Prints a Markdown report and writes it into BENCHMARKS.md.

mod support;

#[path = "../../tests/common/oci.rs"]
mod oci;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::{machine, scratch, write_section};

const ROUNDS: usize = 3;
const TIMEOUT: Duration = Duration::from_secs(300);

/// A host whose stderr lines arrive on a channel.
struct Host {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Host {
    fn start(manifest: &Path) -> Host {
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
        Host { child, lines }
    }

    /// The first line containing `marker` (the host's own, not a guest's).
    fn wait_for(&self, marker: &str) -> String {
        self.wait_for_either(marker, marker)
    }

    /// The first line containing `one` or `other`.
    fn wait_for_either(&self, one: &str, other: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no {one:?} line"));
            if (line.contains(one) || line.contains(other)) && !line.contains(" guest: ") {
                return line;
            }
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn addr_after(line: &str, marker: &str) -> SocketAddr {
    line.split(marker)
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// One round trip on a fresh connection: the reply.
fn ask(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"hello\n")?;
    let mut reply = [0u8; 256];
    let n = stream.read(&mut reply)?;
    Ok(String::from_utf8_lossy(&reply[..n]).into_owned())
}

fn manifest(path: &Path, cache: &Path, component: &str) {
    std::fs::write(
        path,
        format!(
            "[host]\ncache_dir = {:?}\nwatch = true\n\n[[tenant]]\nname = \"fleet\"\ncomponent = {component:?}\nlisten = [\"127.0.0.1:0\"]\n",
            cache.display().to_string()
        ),
    )
    .unwrap();
}

/// Exec to the first answer, in seconds.
fn first_answer(path: &Path) -> f64 {
    let started = Instant::now();
    let host = Host::start(path);
    let addr = addr_after(
        &host.wait_for("fleet: listening on "),
        "fleet: listening on ",
    );
    while ask(addr).is_err() {
        assert!(started.elapsed() < TIMEOUT);
    }
    started.elapsed().as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let component = std::env::var_os("TCPHOST_BENCH_COMPONENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| test_guests::example("python"));
    let size = std::fs::metadata(&component).unwrap().len();
    let dir = scratch("fleet");
    let registry = oci::Registry::start(&dir, None).unwrap_or_else(|why| panic!("{why}"));
    let v1 = registry.push("bench/app", "v1", &component);
    let seed = PathBuf::from(env!("TCPHOST_GUEST_DIR")).join("seed.wasm");
    let v2 = registry.push("bench/app", "v2", &seed);
    let reference = |digest: &str| registry.reference("bench/app", &format!("@{digest}"));
    let path = dir.join("tenants.toml");
    let cache = dir.join("cache");

    let (mut cold, mut stored, mut warm) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let _ = std::fs::remove_dir_all(&cache);
        manifest(&path, &cache, &reference(&v1));
        cold.push(first_answer(&path));
        // The store kept, the compile cache emptied.
        for entry in std::fs::read_dir(&cache).unwrap().map_while(Result::ok) {
            if entry.file_name() != "oci" {
                let _ = std::fs::remove_dir_all(entry.path());
                let _ = std::fs::remove_file(entry.path());
            }
        }
        stored.push(first_answer(&path));
        warm.push(first_answer(&path));
    }

    // A swap to a new digest under load: the watched manifest rewritten.
    let mut swaps = Vec::new();
    let mut failed_total = 0;
    let mut answered_total = 0;
    for _ in 0..ROUNDS {
        manifest(&path, &cache, &reference(&v1));
        let host = Host::start(&path);
        // The two lines come in either order.
        let first = host.wait_for_either("fleet: listening on ", "watching the manifest");
        let addr = if first.contains("fleet: listening on ") {
            host.wait_for("watching the manifest");
            addr_after(&first, "fleet: listening on ")
        } else {
            addr_after(
                &host.wait_for("fleet: listening on "),
                "fleet: listening on ",
            )
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (answered, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let load: Vec<_> = (0..2)
            .map(|_| {
                let (stop, answered, failed) = (stop.clone(), answered.clone(), failed.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match ask(addr) {
                            Ok(reply) if reply.contains("socket server : ") => {
                                answered.fetch_add(1, Ordering::Relaxed)
                            }
                            _ => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let started = Instant::now();
        manifest(&path, &cache, &reference(&v2));
        host.wait_for("live swap done");
        // The Python version answers "python socket server : N"; the new
        // one otherwise.
        while !ask(addr).is_ok_and(|r| {
            r.contains(" socket server : ") && !r.starts_with("python socket server")
        }) {
            assert!(started.elapsed() < TIMEOUT);
        }
        swaps.push(started.elapsed().as_secs_f64());
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        for thread in load {
            thread.join().unwrap();
        }
        failed_total += failed.load(Ordering::Relaxed);
        answered_total += answered.load(Ordering::Relaxed);
    }

    let mut report = String::new();
    writeln!(report, "### The fleet path: a component from a registry\n").unwrap();
    writeln!(
        report,
        "`cargo bench -p host --bench fleet` (release host; CNCF distribution 2.8 on 127.0.0.1; \
         the component: {} ({:.1} MB) pushed in the Wasm OCI layout). Exec to the first answer \
         on a fresh connection, median of {ROUNDS} rounds:\n",
        component.file_name().unwrap().to_string_lossy(),
        size as f64 / 1e6
    )
    .unwrap();
    writeln!(report, "| start | exec to first answer |\n|---|---|").unwrap();
    for (what, values) in [
        ("pulled cold (empty store, empty compile cache)", &cold),
        ("from the store (nothing pulled), compiled again", &stored),
        ("from the store, warm compile cache", &warm),
    ] {
        writeln!(report, "| {what} | {:.2} s |", median(values.clone())).unwrap();
    }
    writeln!(
        report,
        "\nA swap to a new digest under load (two client threads, a fresh connection per round \
         trip), triggered by rewriting the watched manifest: {:.2} s median from the rewrite to \
         the new version's first answer (the watcher's 300 ms settle, the pull, the compile, the \
         start); {failed_total} failed round trips of {} in {ROUNDS} swaps.\n\nMachine: {}\n",
        median(swaps),
        answered_total + failed_total,
        machine()
    )
    .unwrap();
    print!("{report}");
    write_section("fleet", &report);
}
