//! A real OCI registry for tests and benchmarks: CNCF distribution
//! (Debian's `docker-registry`) on 127.0.0.1, and pushing a component to it
//! in the Wasm OCI layout `wkg oci push` writes (through `oci-client`, the
//! crate `wkg` pushes with).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A CNCF distribution registry on 127.0.0.1, stopped when dropped.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    auth: Option<(String, String)>,
}

impl Registry {
    /// Starts one keeping its data in `dir`, anonymous, or wanting basic
    /// auth with `(user, password, htpasswd line)`; an error if
    /// `docker-registry` is not installed.
    pub fn start(dir: &Path, auth: Option<(&str, &str, &str)>) -> Result<Registry, String> {
        let installed = Command::new("docker-registry")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            return Err("no docker-registry on the PATH".into());
        }
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:0\n",
            dir.join("data").display()
        );
        if let Some((_, _, htpasswd)) = auth {
            std::fs::write(dir.join("htpasswd"), htpasswd).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: tcphost-tests\n    path: {}\n",
                dir.join("htpasswd").display()
            ));
        }
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker-registry starts");
        // It logs the port it picked: "listening on 127.0.0.1:PORT".
        let (found, listening) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                        .collect();
                    let _ = found.send(addr);
                }
            }
        });
        let Ok(addr) = listening.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("docker-registry did not say where it listens".to_owned());
        };
        Ok(Registry {
            child,
            addr,
            auth: auth.map(|(user, password, _)| (user.to_owned(), password.to_owned())),
        })
    }

    /// Pushes `wasm` as `repository:tag` in the Wasm OCI layout; returns
    /// the manifest's digest.
    pub fn push(&self, repository: &str, tag: &str, wasm: &Path) -> String {
        push(&self.addr, repository, tag, wasm, self.auth.clone())
    }

    /// `oci://ADDR/REPOSITORY` followed by `suffix` (`:TAG` or `@DIGEST`).
    pub fn reference(&self, repository: &str, suffix: &str) -> String {
        format!("oci://{}/{repository}{suffix}", self.addr)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pushes the component file `wasm` to `registry` as `repository:tag`, as
/// `wkg oci push` lays it out: an OCI image manifest with `artifactType`
/// `application/wasm`, a `application/vnd.wasm.config.v0+json` config and
/// one `application/wasm` layer. Returns the manifest's digest.
pub fn push(
    registry: &str,
    repository: &str,
    tag: &str,
    wasm: &Path,
    auth: Option<(String, String)>,
) -> String {
    use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
    use oci_client::manifest::OciImageManifest;
    use oci_client::secrets::RegistryAuth;
    let bytes = std::fs::read(wasm).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..ClientConfig::default()
        });
        let reference = oci_client::Reference::with_tag(
            registry.to_owned(),
            repository.to_owned(),
            tag.to_owned(),
        );
        let auth = match auth {
            Some((user, password)) => RegistryAuth::Basic(user, password),
            None => RegistryAuth::Anonymous,
        };
        let layer = ImageLayer::new(bytes, "application/wasm".to_owned(), None);
        let config = serde_json::json!({
            "created": "2026-12-06T00:00:00Z",
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [layer.sha256_digest()],
            "component": {"exports": ["wasi:cli/run@0.2.12"], "imports": [], "target": null},
        });
        let config = Config::new(
            serde_json::to_vec(&config).unwrap(),
            "application/vnd.wasm.config.v0+json".to_owned(),
            None,
        );
        let mut manifest = OciImageManifest::build(std::slice::from_ref(&layer), &config, None);
        manifest.artifact_type = Some("application/wasm".to_owned());
        client
            .push(&reference, &[layer], config, &auth, Some(manifest))
            .await
            .expect("the push succeeds");
        client
            .fetch_manifest_digest(&reference, &auth)
            .await
            .expect("the registry names the pushed manifest's digest")
    })
}
