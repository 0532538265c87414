//! The deployment recipes hold manifests the host accepts: the container
//! image's default, and the Kubernetes one, from which the Kubernetes
//! objects are rendered (and must be what it renders to now), whose drain
//! timeout ends before the pod's grace period does. (CI checks the
//! Dockerfile and the Kubernetes objects themselves with hadolint and
//! kubernetes-validate; see .ci/run.)

use std::path::Path;
use std::time::Duration;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The Kubernetes objects as shipped.
fn rendered() -> String {
    std::fs::read_to_string(repo("host/deploy/kubernetes/tcphost.yaml")).unwrap()
}

/// The manifest they are rendered from.
fn kubernetes_manifest() -> host::config::model::Manifest {
    host::config::manifest::load(&repo("host/deploy/kubernetes/tenants.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_kubernetes_objects_are_what_their_manifest_renders_to() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tcphost"))
        .arg("--config")
        .arg(repo("host/deploy/kubernetes/tenants.toml"))
        .args(["--render-kubernetes", "--image", "tcphost:0.1.0"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout) == rendered(),
        "host/deploy/kubernetes/tcphost.yaml is not what tenants.toml renders to: render it again (see the header of tenants.toml)"
    );
}

#[test]
fn the_image_default_manifest_is_valid() {
    let path = repo("host/deploy/tenants.container.toml");
    let manifest = host::config::manifest::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(manifest.tenants.len(), 1);
    assert!(manifest.admin.is_some(), "the image serves its probes");
}

#[test]
fn the_rendered_pods_drain_within_their_grace_period_and_expose_every_tenant() {
    let manifest = kubernetes_manifest();
    assert!(
        manifest.admin.is_some(),
        "readiness needs the admin endpoint"
    );
    let yaml = rendered();
    let lines: Vec<&str> = yaml.lines().map(str::trim).collect();
    let grace: u64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("terminationGracePeriodSeconds:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("terminationGracePeriodSeconds in the Deployment");
    // The pod keeps accepting through its preStop delay, then drains.
    let pre_stop: u64 = lines
        .iter()
        .skip_while(|l| **l != "preStop:")
        .find_map(|l| l.strip_prefix("seconds:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a preStop sleep in the Deployment");
    for tenant in &manifest.tenants {
        assert!(
            Duration::from_secs(pre_stop) + tenant.limits.drain_timeout
                < Duration::from_secs(grace),
            "{} waits {pre_stop} s then drains for {:?}, past the pod's {grace} s grace period",
            tenant.name,
            tenant.limits.drain_timeout
        );
        for addr in &tenant.listen {
            let port = addr.port();
            // The container port's name, which the Service targets.
            let name = lines
                .iter()
                .zip(lines.iter().skip(1))
                .find(|(_, next)| **next == format!("containerPort: {port}"))
                .and_then(|(l, _)| l.strip_prefix("- name:"))
                .map(str::trim)
                .unwrap_or_else(|| {
                    panic!(
                        "{}'s port {port} is not a named container port",
                        tenant.name
                    )
                });
            assert!(
                yaml.contains(&format!("port: {port}\n      targetPort: {name}\n")),
                "the Service does not expose {}'s port {port} (container port {name:?})",
                tenant.name
            );
        }
    }
}

#[test]
fn the_control_endpoint_is_reachable_only_from_inside_the_pod() {
    let manifest = kubernetes_manifest();
    let control = manifest.control.expect("the manifest enables control");
    let host::config::model::ControlAddr::Tcp(addr) = control.addr else {
        panic!("control on TCP loopback, for kubectl port-forward");
    };
    assert!(addr.ip().is_loopback(), "{addr}");
    let yaml = rendered();
    assert!(
        !yaml.contains(&format!("port: {}", addr.port())),
        "a Service or NetworkPolicy exposes the control port"
    );
    // The token file is the mounted Secret's.
    let token = control.token_file.expect("a token file");
    let dir = token.parent().unwrap().display().to_string();
    assert!(
        yaml.contains(&format!("mountPath: {dir}")),
        "the Deployment mounts {dir}"
    );
    assert!(yaml.contains("secretName: tcphost-control"));
}
