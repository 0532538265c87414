//! Components from OCI registries, against a real one: CNCF distribution
//! (Debian's `docker-registry`), started here on 127.0.0.1, with and
//! without htpasswd auth, components pushed to it in the Wasm OCI layout
//! `wkg oci push` writes (through `oci-client`, the crate `wkg` pushes
//! with). A registry that lies is played by a small server of this file's
//! own: only it can serve wrong bytes, an endless blob or nothing at all.
//! And the fleet's other parts: the manifest watched (a Kubernetes
//! ConfigMap's atomic update swaps a tenant live under load), and a host
//! told to run one group of tenants.
//!
//! Without `docker-registry` on the PATH (outside CI) the tests that need
//! it say so in one line and step aside; `.ci/run` installs it.

mod common;

use common::oci::Registry;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The htpasswd registry's account (bcrypt hash made with `htpasswd -B`).
const USER: &str = "puller";
const PASSWORD: &str = "s3cret-pull-pw";
const HTPASSWD: &str = "puller:$2y$05$hSg5VtZMsx/7SEwlN1dOgOpGJFBHRHPUvA/0lc4RbD0bQQarx/.0q\n";

/// Starts a registry for a test (with basic auth if `auth`); `None`
/// (after one line saying why) when `docker-registry` is not installed
/// outside CI.
fn registry(auth: bool) -> Option<Registry> {
    match Registry::start(
        &scratch_dir("registry"),
        auth.then_some((USER, PASSWORD, HTPASSWD)),
    ) {
        Ok(registry) => Some(registry),
        Err(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{why}: .ci/run installs Debian's docker-registry package"
            );
            eprintln!("not tested: {why} (apt-get install docker-registry, or run .ci/run)");
            None
        }
    }
}

/// A `[host]` section with an admin endpoint and a store of this test's
/// own (the tests' shared default cache would hold other tests' pulls).
fn host_section(extra: &str) -> String {
    let cache = scratch_dir("cache");
    format!(
        "[host]\nadmin = \"127.0.0.1:0\"\ncache_dir = {:?}\n{extra}\n",
        cache.display().to_string()
    )
}

#[test]
fn a_tenant_named_by_digest_or_tag_serves_and_reports_the_digest_it_runs() {
    let Some(registry) = registry(false) else {
        return;
    };
    let digest = registry.push("guests/seed", "v1", &repo_guest("seed"));
    let by_digest = registry.reference("guests/seed", &format!("@{digest}"));
    let by_tag = registry.reference("guests/seed", ":v1");
    let manifest = format!(
        "{}[[tenant]]\nname = \"pinned\"\ncomponent = {by_digest:?}\nlisten = [\"127.0.0.1:0\"]\n\n\
         [[tenant]]\nname = \"tagged\"\ncomponent = {by_tag:?}\nlisten = [\"127.0.0.1:0\"]\n",
        host_section("")
    );
    let tenants = Tenants::start(&manifest, &["pinned", "tagged"], &[]);
    for name in ["pinned", "tagged"] {
        assert_seed_reply(&round_trip(&mut connect(tenants.addr(name)), b"hello\n"));
    }
    assert_eq!(tenants.status("pinned")["component"], by_digest.as_str());
    assert_eq!(
        tenants.status("tagged")["component"],
        format!("{by_tag}@{digest}").as_str(),
        "a tag runs as the digest it resolved to"
    );
    let admin = tenants.admin.unwrap();
    let series =
        format!("tcphost_tenant_component{{tenant=\"tagged\",component=\"{by_tag}@{digest}\"}}");
    assert_eq!(metric(admin, &series), 1.0);
    assert!(metric(admin, "tcphost_registry_pulls_total{outcome=\"pulled\"}") >= 1.0);
    assert!(metric(admin, "tcphost_registry_pull_bytes_total") > 0.0);
    assert!(
        tenants.host.log().contains(&format!("{by_tag}@{digest}")),
        "the log names the digest that runs"
    );
}

#[test]
fn a_restarted_host_starts_from_its_store_with_the_registry_down() {
    let Some(registry) = registry(false) else {
        return;
    };
    let digest = registry.push("guests/seed", "stable", &repo_guest("seed"));
    let by_digest = registry.reference("guests/seed", &format!("@{digest}"));
    let by_tag = registry.reference("guests/seed", ":stable");
    let manifest = format!(
        "{}[[tenant]]\nname = \"pinned\"\ncomponent = {by_digest:?}\nlisten = [\"127.0.0.1:0\"]\n\n\
         [[tenant]]\nname = \"tagged\"\ncomponent = {by_tag:?}\nlisten = [\"127.0.0.1:0\"]\n",
        host_section("registry_timeout = \"2s\"")
    );
    let first = Tenants::start(&manifest, &["pinned", "tagged"], &[]);
    let path = first.dir.join("tenants.toml");
    drop(first);
    drop(registry);
    let again = Host::start(&["--config".as_ref(), path.as_os_str()]);
    for name in ["pinned", "tagged"] {
        let marker = format!("{name}: listening on ");
        let addr = addr_after(&again.wait_for_log(&marker), &marker);
        assert_seed_reply(&round_trip(&mut connect(addr), b"still here\n"));
    }
    let log = again.wait_for_log("starting from the digest this tag last resolved to");
    assert!(log.contains(&digest), "{log}");
    assert!(
        !log.contains("pulled component"),
        "nothing is pulled: the registry is down\n{log}"
    );
}

#[test]
fn credentials_from_a_docker_config_reach_a_registry_that_wants_them_and_are_never_logged() {
    let Some(registry) = registry(true) else {
        return;
    };
    let digest = registry.push("private/seed", "v1", &repo_guest("seed"));
    let component = registry.reference("private/seed", &format!("@{digest}"));
    let tenant = |name: &str| {
        format!(
            "[[tenant]]\nname = \"{name}\"\ncomponent = {component:?}\nlisten = [\"127.0.0.1:0\"]\n\n"
        )
    };
    let neighbour = "[[tenant]]\nname = \"neighbour\"\ncomponent = \"builtin:seed\"\nlisten = [\"127.0.0.1:0\"]\n";

    // Without credentials: refused by the registry, so the tenant fails
    // (401 is an answer, not retried), and its neighbour serves.
    let anonymous = Tenants::start(
        &format!("{}{}{neighbour}", host_section(""), tenant("private")),
        &["neighbour"],
        &[],
    );
    assert_seed_reply(&round_trip(
        &mut connect(anonymous.addr("neighbour")),
        b"hi\n",
    ));
    let status = anonymous.wait_status("private", "failed", |s| s["state"] == "failed");
    let why = status["last_error"].as_str().unwrap_or_default();
    assert!(
        why.contains("401") || why.contains("nauthorized"),
        "{status}"
    );
    drop(anonymous);

    // With a Docker config.json (as a mounted dockerconfigjson Secret).
    let secrets = scratch_dir("secrets");
    let encoded = base64_encode(format!("{USER}:{PASSWORD}").as_bytes());
    std::fs::write(
        secrets.join("config.json"),
        format!(
            "{{\"auths\":{{\"{}\":{{\"auth\":\"{encoded}\"}}}}}}",
            registry.addr
        ),
    )
    .unwrap();
    let credentials = format!(
        "registry_credentials = {:?}",
        secrets.join("config.json").display().to_string()
    );
    let authorised = Tenants::start(
        &format!(
            "{}{}{neighbour}",
            host_section(&credentials),
            tenant("private")
        ),
        &["private", "neighbour"],
        &[],
    );
    assert_seed_reply(&round_trip(
        &mut connect(authorised.addr("private")),
        b"hi\n",
    ));
    let log = authorised.host.log();
    assert!(!log.contains(PASSWORD) && !log.contains(&encoded), "{log}");
}

/// Standard base64 (for a config.json's `auth`).
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, &b| (n << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
        out.push_str(&"=".repeat(3 - chunk.len()));
    }
    out
}

/// How the lying registry lies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lie {
    /// It does not: the component as pushed (to test what a real registry
    /// cannot do here, the token flow).
    None,
    /// The declared number of bytes, but other ones.
    OtherBytes,
    /// Bytes without end (up to 1 GiB, with no length given).
    Endless,
    /// A layer declared larger than the host accepts.
    Oversized,
    /// Accepts, reads the request and never answers.
    Stall,
    /// Its token service answers without end.
    EndlessToken,
}

/// A registry that lies as `lie` says about one artifact,
/// `lies/component`, whose manifest it serves honestly otherwise; with a
/// token account, it wants the registry token flow (as Docker Hub and
/// GHCR do): a Bearer challenge naming its own token service, which gives
/// a token for that account's basic credentials.
struct Liar {
    /// The reference to the artifact, pinned to its manifest's digest.
    reference: String,
    /// `127.0.0.1:PORT`.
    addr: SocketAddr,
    /// Blob bytes it sent, and whether a blob was asked for at all.
    sent: Arc<AtomicU64>,
    blob_asked: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

/// What the lying registry serves, shared by its connections.
struct Served {
    lie: Lie,
    wasm: Vec<u8>,
    size: u64,
    manifest: Vec<u8>,
    /// `(user, password)` the token service wants, if it wants any.
    account: Option<(String, String)>,
    sent: Arc<AtomicU64>,
    blob_asked: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    realm: String,
}

/// The token the lying registry's token service gives.
const TOKEN: &str = "t0ken-4f2a9c";

impl Liar {
    fn start(lie: Lie, component: &Path) -> Liar {
        Liar::start_with(lie, component, None)
    }

    fn start_with(lie: Lie, component: &Path, account: Option<(&str, &str)>) -> Liar {
        let wasm = std::fs::read(component).unwrap();
        let layer_digest = sha256(&wasm);
        let size = if lie == Lie::Oversized {
            100 << 20
        } else {
            wasm.len() as u64
        };
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/wasm",
            "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": sha256(b"{}"), "size": 2},
            "layers": [{"mediaType": "application/wasm", "digest": layer_digest, "size": size}],
        }))
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reference = format!("oci://{addr}/lies/component@{}", sha256(&manifest));
        let served = Arc::new(Served {
            lie,
            wasm,
            size,
            manifest,
            account: account.map(|(u, p)| (u.to_owned(), p.to_owned())),
            sent: Arc::new(AtomicU64::new(0)),
            blob_asked: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
            realm: format!("http://{addr}/token"),
        });
        let (sent, blob_asked, stop) = (
            served.sent.clone(),
            served.blob_asked.clone(),
            served.stop.clone(),
        );
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !served.stop.load(Ordering::Relaxed) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let served = served.clone();
                std::thread::spawn(move || {
                    let _ = serve_lies(stream, &served);
                });
            }
        });
        Liar {
            reference,
            addr,
            sent,
            blob_asked,
            stop,
        }
    }
}

impl Drop for Liar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_lies(stream: TcpStream, served: &Served) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        let mut authorization = String::new();
        let mut line = String::new();
        while reader.read_line(&mut line)? > 2 {
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("authorization")
            {
                authorization = value.trim().to_owned();
            }
            line.clear();
        }
        let target = request
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let path = target.split('?').next().unwrap_or_default();
        if served.lie == Lie::Stall && path.contains("/manifests/") {
            // Holds the connection, answering nothing, until the test ends.
            while !served.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
            return Ok(());
        }
        if path == "/token" {
            let Some((user, password)) = &served.account else {
                out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
                continue;
            };
            if served.lie == Lie::EndlessToken {
                out.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"token\":\"")?;
                let chunk = vec![b'a'; 64 * 1024];
                for _ in 0..(1 << 14) {
                    out.write_all(&chunk)?;
                    served.sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                return Ok(());
            }
            let expected = format!(
                "Basic {}",
                base64_encode(format!("{user}:{password}").as_bytes())
            );
            if authorization == expected {
                let body = format!("{{\"token\":\"{TOKEN}\",\"expires_in\":300}}");
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )?;
            } else {
                out.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")?;
            }
            continue;
        }
        if served.account.is_some() && authorization != format!("Bearer {TOKEN}") {
            write!(
                out,
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"{}\",service=\"liar\",scope=\"repository:lies/component:pull\"\r\nContent-Length: 0\r\n\r\n",
                served.realm
            )?;
            continue;
        }
        if path == "/v2/" {
            out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")?;
        } else if path.contains("/manifests/") {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\n\r\n",
                served.manifest.len()
            )?;
            out.write_all(&served.manifest)?;
        } else if path.contains("/blobs/") {
            served.blob_asked.store(true, Ordering::Relaxed);
            let chunk = vec![b'x'; 64 * 1024];
            match served.lie {
                Lie::Endless => {
                    out.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
                    while served.sent.load(Ordering::Relaxed) < 1 << 30 {
                        out.write_all(&chunk)?;
                        served.sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    }
                    return Ok(());
                }
                Lie::None => {
                    write!(
                        out,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                        served.wasm.len()
                    )?;
                    out.write_all(&served.wasm)?;
                }
                _ => {
                    write!(
                        out,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                        served.size
                    )?;
                    let mut left = served.size;
                    while left > 0 {
                        let n = left.min(chunk.len() as u64) as usize;
                        out.write_all(&chunk[..n])?;
                        served.sent.fetch_add(n as u64, Ordering::Relaxed);
                        left -= n as u64;
                    }
                }
            }
        } else {
            out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
        }
    }
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{:x}", sha2::Sha256::digest(bytes))
}

/// A host running `liar`'s component as tenant `lied-to` beside a
/// `builtin:seed` neighbour under load; returns the host once the tenant
/// has failed, after checking the neighbour kept answering throughout.
fn lied_to(liar: &Liar, extra: &str) -> (Tenants, serde_json::Value) {
    let manifest = format!(
        "{}[[tenant]]\nname = \"lied-to\"\ncomponent = {:?}\nlisten = [\"127.0.0.1:0\"]\n\n\
         [[tenant]]\nname = \"neighbour\"\ncomponent = \"builtin:seed\"\nlisten = [\"127.0.0.1:0\"]\n",
        host_section(extra),
        liar.reference
    );
    let tenants = Tenants::start(&manifest, &["neighbour"], &[]);
    let neighbour = Neighbour::start(tenants.addr("neighbour"));
    let status = tenants.wait_status("lied-to", "failed", |s| {
        s["state"] == "failed" && !s["last_error"].is_null()
    });
    neighbour.assert_all_answered();
    (tenants, status)
}

#[test]
fn a_registry_serving_other_bytes_for_a_digest_starts_nothing_and_neighbours_serve() {
    let liar = Liar::start(Lie::OtherBytes, &repo_guest("seed"));
    let (tenants, status) = lied_to(&liar, "");
    let why = status["last_error"].as_str().unwrap();
    assert!(why.contains("digest"), "{status}");
    assert!(
        !tenants.host.log().contains("lied-to: listening on"),
        "nothing it did not ask for runs"
    );
    let admin = tenants.admin.unwrap();
    assert_eq!(
        metric(admin, "tcphost_registry_pulls_total{outcome=\"failed\"}"),
        1.0
    );
}

#[test]
fn an_endless_blob_is_cut_at_its_declared_size_and_costs_bounded_memory() {
    let liar = Liar::start(Lie::Endless, &repo_guest("seed"));
    let (tenants, status) = lied_to(&liar, "");
    assert!(
        status["last_error"]
            .as_str()
            .unwrap()
            .contains("more than the component's declared"),
        "{status}"
    );
    let declared = std::fs::metadata(repo_guest("seed")).unwrap().len();
    // The liar may have sent more than the host took (socket buffers), but
    // the host hung up long before the 1 GiB it had to send.
    let sent = liar.sent.load(Ordering::Relaxed);
    assert!(
        sent < declared + (32 << 20),
        "the host kept reading: {sent} bytes sent for {declared} declared"
    );
    let rss = tenants.host.rss_kib() * 1024;
    assert!(
        rss < 400 << 20,
        "the host holds {rss} bytes after a {declared}-byte bound"
    );
}

#[test]
fn a_component_larger_than_the_limit_is_refused_before_it_is_pulled() {
    let liar = Liar::start(Lie::Oversized, &repo_guest("seed"));
    let (_tenants, status) = lied_to(&liar, "max_component_size = \"10 MiB\"");
    assert!(
        status["last_error"]
            .as_str()
            .unwrap()
            .contains("more than host.max_component_size"),
        "{status}"
    );
    assert!(
        !liar.blob_asked.load(Ordering::Relaxed),
        "nothing was downloaded"
    );
}

#[test]
fn a_stalled_registry_times_out_is_retried_and_leaves_neighbours_serving() {
    let liar = Liar::start(Lie::Stall, &repo_guest("seed"));
    let started = Instant::now();
    let (tenants, status) = lied_to(&liar, "registry_timeout = \"300ms\"");
    assert!(
        status["last_error"]
            .as_str()
            .unwrap()
            .contains("did not answer within 300ms"),
        "{status}"
    );
    assert!(started.elapsed() < TIMEOUT);
    // Unavailable, not refused: retried in the background.
    let admin = tenants.admin.unwrap();
    wait_metric(
        admin,
        "tcphost_registry_pulls_total{outcome=\"failed\"}",
        |n| n >= 2.0,
    );
}

#[test]
fn a_swap_request_pulls_only_from_the_registries_it_is_allowed() {
    let Some(registry) = registry(false) else {
        return;
    };
    let allowed = registry.reference("allowed/seed", ":v1");
    let other = registry.reference("elsewhere/seed", ":v1");
    registry.push("allowed/seed", "v1", &repo_guest("seed"));
    registry.push("elsewhere/seed", "v1", &repo_guest("seed"));
    let manifest = format!(
        "{}[[tenant]]\nname = \"swapped\"\ncomponent = \"builtin:seed\"\nlisten = [\"127.0.0.1:0\"]\n",
        host_section(&format!("registries = [\"{}/allowed\"]", registry.addr))
    );
    let tenants = Tenants::start(&manifest, &["swapped"], &[]);
    let (code, body) = tenants.post("/tenants/swapped/swap", &other);
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("not in a registry swaps may pull from"),
        "{body}"
    );
    assert_eq!(tenants.status("swapped")["component"], "builtin:seed");
    let (code, body) = tenants.post("/tenants/swapped/swap", &allowed);
    assert_eq!(code, 200, "{body}");
    let status = tenants.status("swapped");
    assert!(
        status["component"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{allowed}@sha256:")),
        "{status}"
    );
    assert_seed_reply(&round_trip(&mut connect(tenants.addr("swapped")), b"hi\n"));
}

/// A directory laid out as the kubelet mounts a ConfigMap: `tenants.toml`
/// links to `..data/tenants.toml`, `..data` to a timestamped directory.
struct ConfigMapDir {
    dir: PathBuf,
    generation: u32,
}

impl ConfigMapDir {
    fn new(text: &str) -> ConfigMapDir {
        let mut this = ConfigMapDir {
            dir: scratch_dir("configmap"),
            generation: 0,
        };
        this.update(text);
        std::os::unix::fs::symlink("..data/tenants.toml", this.dir.join("tenants.toml")).unwrap();
        this
    }

    fn path(&self) -> PathBuf {
        self.dir.join("tenants.toml")
    }

    /// The kubelet's atomic update: a new timestamped directory, `..data_tmp`
    /// pointing to it, renamed over `..data`, the old directory removed.
    fn update(&mut self, text: &str) {
        self.generation += 1;
        let old = format!("..2026_12_06_00_00_{:02}.000000001", self.generation - 1);
        let new = format!("..2026_12_06_00_00_{:02}.000000001", self.generation);
        std::fs::create_dir(self.dir.join(&new)).unwrap();
        std::fs::write(self.dir.join(&new).join("tenants.toml"), text).unwrap();
        std::os::unix::fs::symlink(&new, self.dir.join("..data_tmp")).unwrap();
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).unwrap();
        let _ = std::fs::remove_dir_all(self.dir.join(old));
    }
}

/// Round trips on a fresh connection each, from their own thread, until
/// stopped: every one must connect and be answered.
struct FreshClients {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(u64, Vec<String>)>,
}

impl FreshClients {
    fn start(addr: SocketAddr) -> FreshClients {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut answered, mut failures) = (0, Vec::new());
            while !flag.load(Ordering::Relaxed) {
                let outcome = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).and_then(
                    |mut stream| {
                        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                        stream.write_all(b"fresh\n")?;
                        let mut reply = [0u8; 128];
                        let n = stream.read(&mut reply)?;
                        Ok(String::from_utf8_lossy(&reply[..n]).into_owned())
                    },
                );
                match outcome {
                    // Either version's reply: the seed's, or the WASI 0.3 one's.
                    Ok(reply) if reply.contains(" socket server : ") => answered += 1,
                    Ok(reply) => failures.push(format!("unexpected reply {reply:?}")),
                    Err(e) => failures.push(e.to_string()),
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (answered, failures)
        });
        FreshClients { stop, thread }
    }

    fn assert_all_answered(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let (answered, failures) = self.thread.join().unwrap();
        assert!(
            failures.is_empty(),
            "{} failed: {failures:?}",
            failures.len()
        );
        assert!(answered > 0);
        answered
    }
}

#[test]
fn a_configmap_update_to_another_digest_swaps_the_tenant_live_under_load() {
    let Some(registry) = registry(false) else {
        return;
    };
    // Two versions that tell themselves apart: the seed server, and the
    // WASI 0.3 guest ("rust socket server : N").
    let v1 = registry.push("guests/seed", "v1", &repo_guest("seed"));
    let p3_seed = PathBuf::from(env!("TCPHOST_P3_GUEST_DIR")).join("seed.wasm");
    let v2 = registry.push("guests/seed", "v2", &p3_seed);
    assert_ne!(v1, v2);
    let host_keys = host_section("watch = true");
    let manifest = |digest: &str| {
        format!(
            "{host_keys}[[tenant]]\nname = \"fleet\"\ncomponent = {:?}\nlisten = [\"127.0.0.1:0\"]\n",
            registry.reference("guests/seed", &format!("@{digest}"))
        )
    };
    let mut configmap = ConfigMapDir::new(&manifest(&v1));
    let host = Host::start(&["--config".as_ref(), configmap.path().as_os_str()]);
    let addr = addr_after(
        &host.wait_for_log("fleet: listening on "),
        "fleet: listening on ",
    );
    let admin = addr_after(
        &host.wait_for_log("admin: listening on "),
        "admin: listening on ",
    );
    host.wait_for_log("watching the manifest");
    let (kept, fresh) = (Neighbour::start(addr), FreshClients::start(addr));

    configmap.update(&manifest(&v2));
    let series = |digest: &str| {
        format!(
            "tcphost_tenant_component{{tenant=\"fleet\",component=\"{}\"}}",
            registry.reference("guests/seed", &format!("@{digest}"))
        )
    };
    let deadline = Instant::now() + TIMEOUT;
    while !metrics(admin).contains_key(&series(&v2)) {
        assert!(
            Instant::now() < deadline,
            "the tenant never ran the new digest:\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    host.wait_for_log("live swap done");
    // New clients reach the new version (its own reply) while the load
    // runs on; the connection held from before stays on the old one.
    let mut stream = connect(addr);
    let reply = round_trip(&mut stream, b"new\n");
    assert!(reply.starts_with("rust socket server : "), "{reply:?}");
    fresh.assert_all_answered();
    kept.assert_all_answered();
    // Counted once the reload returns, a moment after its effects show.
    wait_metric(
        admin,
        "tcphost_manifest_reloads_total{outcome=\"applied\"}",
        |n| n == 1.0,
    );
}

#[test]
fn a_watched_manifest_that_does_not_parse_changes_nothing_and_a_renamed_one_applies() {
    let dir = scratch_dir("watched");
    let path = dir.join("tenants.toml");
    let one = format!(
        "{}watch = true\n[[tenant]]\nname = \"first\"\ncomponent = \"builtin:seed\"\nlisten = [\"127.0.0.1:0\"]\n",
        host_section("")
    );
    std::fs::write(&path, &one).unwrap();
    let host = Host::start(&["--config".as_ref(), path.as_os_str()]);
    let first = addr_after(
        &host.wait_for_log("first: listening on "),
        "first: listening on ",
    );
    let admin = addr_after(
        &host.wait_for_log("admin: listening on "),
        "admin: listening on ",
    );
    host.wait_for_log("watching the manifest");

    std::fs::write(&path, "[[tenant]\nname = ").unwrap();
    host.wait_for_log("the manifest changed and is not applied, nothing changed");
    wait_metric(
        admin,
        "tcphost_manifest_reloads_total{outcome=\"refused\"}",
        |n| n == 1.0,
    );
    assert_seed_reply(&round_trip(&mut connect(first), b"still\n"));

    // An editor's save: written beside, renamed over.
    let two = format!(
        "{one}\n[[tenant]]\nname = \"second\"\ncomponent = \"builtin:seed\"\nlisten = [\"127.0.0.1:0\"]\n"
    );
    std::fs::write(dir.join(".tenants.toml.swp"), &two).unwrap();
    std::fs::rename(dir.join(".tenants.toml.swp"), &path).unwrap();
    let second = addr_after(
        &host.wait_for_log("second: listening on "),
        "second: listening on ",
    );
    assert_seed_reply(&round_trip(&mut connect(second), b"new\n"));
    assert_seed_reply(&round_trip(&mut connect(first), b"kept\n"));
    // Counted once the reload returns, a moment after its effects show.
    wait_metric(
        admin,
        "tcphost_manifest_reloads_total{outcome=\"applied\"}",
        |n| n == 1.0,
    );
}

#[test]
fn a_host_told_one_group_runs_only_its_tenants_through_reloads_too() {
    let dir = scratch_dir("groups");
    let path = dir.join("tenants.toml");
    let manifest = |extra: &str| {
        format!(
            "[group.edge]\nreplicas = 3\n\n\
             [[tenant]]\nname = \"core\"\ncomponent = \"builtin:seed\"\nlisten = [\"127.0.0.1:0\"]\n\n\
             [[tenant]]\nname = \"front\"\ngroup = \"edge\"\ncomponent = \"builtin:seed\"\nlisten = [\"127.0.0.1:0\"]\n{extra}"
        )
    };
    std::fs::write(&path, manifest("")).unwrap();
    let host = Host::start(&[
        "--config".as_ref(),
        path.as_os_str(),
        "--group".as_ref(),
        "edge".as_ref(),
    ]);
    let front = addr_after(
        &host.wait_for_log("front: listening on "),
        "front: listening on ",
    );
    assert_seed_reply(&round_trip(&mut connect(front), b"edge\n"));
    // A reload adds the group's new tenant, and only it.
    std::fs::write(
        &path,
        manifest(
            "\n[[tenant]]\nname = \"side\"\ngroup = \"edge\"\ncomponent = \"builtin:seed\"\nlisten = [\"127.0.0.1:0\"]\n\n\
             [[tenant]]\nname = \"other\"\ncomponent = \"builtin:seed\"\nlisten = [\"127.0.0.1:0\"]\n",
        ),
    )
    .unwrap();
    host.signal("HUP");
    host.wait_for_log("side: listening on");
    let log = host.wait_for_log("manifest reloaded");
    for absent in ["core: listening on", "other: listening on"] {
        assert!(!log.contains(absent), "{absent} in:\n{log}");
    }

    let (status, stderr) = run_host(&[
        "--config".as_ref(),
        path.as_os_str(),
        "--group".as_ref(),
        "nowhere".as_ref(),
    ]);
    assert!(!status.success());
    assert_clean_error(
        &stderr,
        "error: --group: the manifest has no group \"nowhere\"",
    );
}

#[test]
fn the_registry_token_flow_is_followed_with_credentials_from_a_docker_config() {
    let liar = Liar::start_with(Lie::None, &repo_guest("seed"), Some((USER, PASSWORD)));
    let secrets = scratch_dir("token-secrets");
    let encoded = base64_encode(format!("{USER}:{PASSWORD}").as_bytes());
    std::fs::write(
        secrets.join("config.json"),
        format!(
            "{{\"auths\":{{\"{}\":{{\"auth\":\"{encoded}\"}}}}}}",
            liar.addr
        ),
    )
    .unwrap();
    let manifest = format!(
        "{}[[tenant]]\nname = \"tokened\"\ncomponent = {:?}\nlisten = [\"127.0.0.1:0\"]\n",
        host_section(&format!(
            "registry_credentials = {:?}",
            secrets.join("config.json").display().to_string()
        )),
        liar.reference
    );
    let tenants = Tenants::start(&manifest, &["tokened"], &[]);
    assert_seed_reply(&round_trip(&mut connect(tenants.addr("tokened")), b"hi\n"));
    let log = tenants.host.log();
    for secret in [PASSWORD, encoded.as_str(), TOKEN] {
        assert!(!log.contains(secret), "{secret} logged:\n{log}");
    }
}

#[test]
fn an_endless_token_answer_is_cut_and_nothing_runs() {
    let liar = Liar::start_with(
        Lie::EndlessToken,
        &repo_guest("seed"),
        Some((USER, PASSWORD)),
    );
    let (_tenants, status) = lied_to(&liar, "");
    let why = status["last_error"].as_str().unwrap();
    assert!(
        why.contains("more than 65536 bytes for the token"),
        "{status}"
    );
    assert!(!liar.blob_asked.load(Ordering::Relaxed));
}

#[test]
fn a_moved_tag_is_a_swap_on_reload_and_a_pinned_digest_beside_a_tag_decides() {
    let Some(registry) = registry(false) else {
        return;
    };
    let first = registry.push("guests/app", "stable", &repo_guest("seed"));
    let tagged = registry.reference("guests/app", ":stable");
    let pinned = registry.reference("guests/app", &format!(":stable@{first}"));
    let manifest = format!(
        "{}[[tenant]]\nname = \"follows\"\ncomponent = {tagged:?}\nlisten = [\"127.0.0.1:0\"]\n\n\
         [[tenant]]\nname = \"pinned\"\ncomponent = {pinned:?}\nlisten = [\"127.0.0.1:0\"]\n",
        host_section("")
    );
    let tenants = Tenants::start(&manifest, &["follows", "pinned"], &[]);
    // The tag moves to the WASI 0.3 guest, which answers "rust socket server".
    let p3 = PathBuf::from(env!("TCPHOST_P3_GUEST_DIR")).join("seed.wasm");
    let moved = registry.push("guests/app", "stable", &p3);
    assert_ne!(moved, first);
    tenants.host.signal("HUP");
    tenants.host.wait_for_log("SIGHUP: manifest reloaded");
    let follows = tenants.status("follows");
    assert_eq!(
        follows["component"],
        format!("{tagged}@{moved}").as_str(),
        "{follows}"
    );
    assert_eq!(follows["generation"], 2);
    let reply = round_trip(&mut connect(tenants.addr("follows")), b"moved\n");
    assert!(reply.starts_with("rust socket server : "), "{reply:?}");
    let pinned_status = tenants.status("pinned");
    assert_eq!(
        pinned_status["component"],
        pinned.as_str(),
        "{pinned_status}"
    );
    assert_eq!(
        pinned_status["generation"], 1,
        "the pinned tenant is left alone"
    );
    assert_seed_reply(&round_trip(&mut connect(tenants.addr("pinned")), b"same\n"));
}
