//! A host started on a manifest, with its tenants' addresses and its
//! admin and control endpoints (the control one added with a token where
//! the manifest has an admin endpoint).

use super::*;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

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
