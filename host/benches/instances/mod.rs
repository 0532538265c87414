//! How one tenant scales over its instances: `cargo bench -p host --bench
//! throughput -- instances` writes the section "instances" of
//! BENCHMARKS.md.
//!
//! 1. Scaling where the guest is the bottleneck: the `compute` test guest
//!    (about half a millisecond of CPU per request), one instance against
//!    two, 50 busy clients. The load generator needs a few µs per round
//!    trip at a few thousand per second: it is not the bottleneck.
//! 2. The seed guest with `instances = "auto"` beside one instance and
//!    native tokio, 50 and 1000 busy clients, with CPU per round trip.
//! 3. Distribution with one instance slowed down (it shares its guest
//!    thread with a neighbour that computes without end): the host's
//!    shared accept queue (each instance accepts when it is ready) against
//!    an even split fixed in advance, which is what SO_REUSEPORT's hash or
//!    a host handing connections out in turn gives to clients that connect
//!    at once; emulated by two one-instance tenants on two addresses, the
//!    clients split evenly between them.

use super::{Outcome, ROUNDS, Server, Summary, free_addr, load_spread, native, wait_accepting};
use crate::support::{machine, scratch};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// A host running `tenants` (manifest `[[tenant]]` tables), with its admin
/// endpoint at the returned address; waits until every address in `wait`
/// answers.
fn host(
    dir: &Path,
    name: &'static str,
    tenants: &str,
    wait: &[SocketAddr],
) -> (Server, SocketAddr) {
    let admin = free_addr();
    let manifest = dir.join(format!("instances-{}.toml", admin.port()));
    std::fs::write(
        &manifest,
        format!("[host]\ncache_dir = \"cache\"\nadmin = \"{admin}\"\n\n{tenants}"),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tcphost"))
        .arg("--config")
        .arg(&manifest)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for addr in wait {
        wait_accepting(*addr, Instant::now());
    }
    let server = Server {
        name,
        child,
        addr: wait[0],
        admin: None,
    };
    (server, admin)
}

/// A `[[tenant]]` table.
fn tenant(name: &str, component: &str, addr: SocketAddr, limits: &str) -> String {
    format!(
        "[[tenant]]\nname = \"{name}\"\ncomponent = \"{component}\"\nlisten = [\"{addr}\"]\nlimits = {{ max_connections = 20000{limits} }}\n\n"
    )
}

/// `GET /status/NAME` of the admin endpoint at `admin`.
fn status(admin: SocketAddr, name: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(admin).unwrap();
    write!(
        stream,
        "GET /status/{name} HTTP/1.0\r\nHost: {admin}\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_default()
}

/// Each instance's open connections, as "a / b".
fn split(admin: SocketAddr, name: &str) -> String {
    let status = status(admin, name);
    let open: Vec<String> = status["instances"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|i| i["connections_open"].as_u64().unwrap_or(0).to_string())
                .collect()
        })
        .unwrap_or_default();
    open.join(" / ")
}

/// Starts the hostile guest's endless computation on the tenant at `addr`
/// (its CPU limit set out of reach): it keeps its guest thread half busy.
fn start_hog(addr: SocketAddr) -> std::net::TcpStream {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(b"spin\n").unwrap();
    stream
}

/// One table row per server and case: the medians of `outcomes`, and
/// the ratio of throughput and CPU to the row `base` of the same case.
fn table(
    report: &mut String,
    cases: &[(&str, usize)],
    names: &[String],
    outcomes: &[Vec<Vec<Outcome>>],
    base: usize,
) {
    writeln!(report, "| case | server | round trips/s | range | vs {} | CPU per round trip | CPU vs {} | p50 | p99 | per client: fewest / median |", names[base], names[base]).unwrap();
    writeln!(
        report,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    .unwrap();
    for (c, (label, _)) in cases.iter().enumerate() {
        let reference = Summary::of(&outcomes[base][c]);
        for (s, name) in names.iter().enumerate() {
            let o = Summary::of(&outcomes[s][c]);
            writeln!(
                report,
                "| {label} | {name} | {:.0} | {:.0}-{:.0} | {:.2}x | {:.1} µs | {:.2}x | {:.0} µs | {:.0} µs | {:.0} / {:.0} |",
                o.per_sec,
                o.per_sec_min,
                o.per_sec_max,
                o.per_sec / reference.per_sec,
                o.cpu_us,
                o.cpu_us / reference.cpu_us,
                o.p50_us,
                o.p99_us,
                o.fewest,
                o.median_client,
            )
            .unwrap();
        }
    }
    report.push('\n');
}

/// Runs every case against every server in turn, [`ROUNDS`] times; a
/// server is its addresses (clients spread over them) and process. With
/// `spread`, the server, admin endpoint and tenant whose clients per
/// instance to read halfway through each measurement: returned, one per
/// round and case.
fn measure(
    cases: &[(&str, usize)],
    servers: &[(Vec<SocketAddr>, u32, String)],
    spread: Option<(usize, SocketAddr, &'static str)>,
) -> (Vec<Vec<Vec<Outcome>>>, Vec<String>) {
    let mut spreads = Vec::new();
    let mut outcomes: Vec<Vec<Vec<Outcome>>> = servers
        .iter()
        .map(|_| cases.iter().map(|_| Vec::new()).collect())
        .collect();
    for round in 1..=ROUNDS {
        for (c, (label, busy)) in cases.iter().enumerate() {
            for (s, (addrs, pid, name)) in servers.iter().enumerate() {
                eprintln!("round {round}/{ROUNDS}: {name}: {label}");
                let reader = spread.filter(|w| w.0 == s).map(|(_, admin, tenant)| {
                    std::thread::spawn(move || {
                        std::thread::sleep(super::WARM_UP + super::MEASURE / 2);
                        split(admin, tenant)
                    })
                });
                outcomes[s][c].push(load_spread(addrs, *pid, *busy, 0, None));
                if let Some(reader) = reader {
                    spreads.push(reader.join().unwrap());
                }
            }
        }
    }
    (outcomes, spreads)
}

/// The whole section.
pub fn run() {
    let dir = scratch("instances");
    let compute = test_guests::path("compute");
    let compute = compute.display().to_string();
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mut report = String::new();
    writeln!(
        report,
        "Machine: {}. Guest threads: {threads} (one per core, the default).\n",
        machine()
    )
    .unwrap();
    writeln!(report, "Load: as above (each client sends `ping\\n` and waits for the reply; one load-generator thread in the benchmark's process; {ROUNDS} rounds of 3 s after 1 s of warm-up, servers taking turns, medians). CPU per round trip is the server process's user + system time over the round trips.\n").unwrap();

    // 1. Scaling where the guest computes.
    let (one_addr, two_addr) = (free_addr(), free_addr());
    let (one, _) = host(
        &dir,
        "compute, 1 instance",
        &tenant("c", &compute, one_addr, ""),
        &[one_addr],
    );
    let (two, two_admin) = host(
        &dir,
        "compute, 2 instances",
        &tenant("c", &compute, two_addr, ", instances = 2"),
        &[two_addr],
    );
    let cases = [("50 busy", 50)];
    let servers = vec![
        (
            vec![one_addr],
            one.child.id(),
            "compute guest, 1 instance".to_owned(),
        ),
        (
            vec![two_addr],
            two.child.id(),
            "compute guest, 2 instances".to_owned(),
        ),
    ];
    let (outcomes, spreads) = measure(&cases, &servers, Some((1, two_admin, "c")));
    let names: Vec<String> = servers.iter().map(|s| s.2.clone()).collect();
    let service = Summary::of(&outcomes[0][0]);
    writeln!(
        report,
        "### Scaling: a guest that computes about half a millisecond per request\n"
    )
    .unwrap();
    writeln!(report, "The `compute` test guest runs 320,000 rounds of a hash chain per request: {:.0} µs of server CPU per round trip with one instance. Two instances behind the one address: {:.2}x the round trips of one (clients per instance, each round: {}).\n", service.cpu_us, Summary::of(&outcomes[1][0]).per_sec / service.per_sec, spreads.join(", ")).unwrap();
    table(&mut report, &cases, &names, &outcomes, 0);
    drop((one, two));

    // 2. The seed guest, one instance and one per guest thread, beside native.
    let (one_addr, auto_addr) = (free_addr(), free_addr());
    let native = native();
    let (one, _) = host(
        &dir,
        "seed, 1 instance",
        &tenant("s", "builtin:seed", one_addr, ""),
        &[one_addr],
    );
    let (auto, auto_admin) = host(
        &dir,
        "seed, auto",
        &tenant("s", "builtin:seed", auto_addr, ", instances = \"auto\""),
        &[auto_addr],
    );
    let cases = [("50 busy", 50), ("1000 busy", 1000)];
    let servers = vec![
        (
            vec![native.addr],
            native.child.id(),
            "native tokio".to_owned(),
        ),
        (
            vec![one_addr],
            one.child.id(),
            "host + seed, 1 instance".to_owned(),
        ),
        (
            vec![auto_addr],
            auto.child.id(),
            format!("host + seed, instances = \"auto\" ({threads})"),
        ),
    ];
    let (outcomes, spreads) = measure(&cases, &servers, Some((2, auto_admin, "s")));
    let names: Vec<String> = servers.iter().map(|s| s.2.clone()).collect();
    writeln!(
        report,
        "### The seed guest over every core, beside native tokio\n"
    )
    .unwrap();
    writeln!(report, "Native tokio uses its multi-threaded runtime (one worker per core). Clients per instance with `auto`, each round and case (50, 1000 busy): {}.\n", spreads.join(", ")).unwrap();
    table(&mut report, &cases, &names, &outcomes, 0);
    drop((native, one, auto));

    // 3. One instance slowed down.
    let (hog, shared, a, b) = (free_addr(), free_addr(), free_addr(), free_addr());
    let hog_guest = test_guests::path("hostile").display().to_string();
    let hogged =
        |name: &str, addr: SocketAddr| tenant(name, &hog_guest, addr, ", cpu_limit = \"1h\"");
    let (queue, queue_admin) = host(
        &dir,
        "shared queue",
        &format!(
            "{}{}",
            hogged("hog", hog),
            tenant("c", &compute, shared, ", instances = 2")
        ),
        &[hog, shared],
    );
    let _spinning = start_hog(hog);
    let fixed_hog = free_addr();
    let (fixed, _) = host(
        &dir,
        "even split",
        &format!(
            "{}{}{}",
            hogged("hog", fixed_hog),
            tenant("a", &compute, a, ""),
            tenant("b", &compute, b, "")
        ),
        &[fixed_hog, a, b],
    );
    let _also_spinning = start_hog(fixed_hog);
    let cases = [("50 busy", 50)];
    let servers = vec![
        (
            vec![shared],
            queue.child.id(),
            "shared accept queue (the host)".to_owned(),
        ),
        (
            vec![a, b],
            fixed.child.id(),
            "even split fixed in advance".to_owned(),
        ),
    ];
    let (outcomes, spreads) = measure(&cases, &servers, Some((0, queue_admin, "c")));
    let names: Vec<String> = servers.iter().map(|s| s.2.clone()).collect();
    writeln!(report, "### Distribution with one instance slowed down\n").unwrap();
    writeln!(report, "Two instances of the compute guest on two guest threads; a third tenant computes without end on one of those threads (the host spreads instances over the least loaded threads, so one compute instance always shares with it), leaving that instance about half a core. The shared accept queue hands a new client to whichever instance asks first, and a slowed instance asks less often: clients per instance, each round: {}. An even split gives each instance 25 clients whatever its speed (SO_REUSEPORT hashes clients to sockets blind to load; a host handing connections out in turn does the same for clients that connect together). CPU per round trip includes the spinning tenant's.\n", spreads.join(", ")).unwrap();
    table(&mut report, &cases, &names, &outcomes, 0);
    drop((queue, fixed));

    print!("{report}");
    crate::support::write_section("instances", &report);
}
