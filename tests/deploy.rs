//! The deployment recipes hold manifests the host accepts: the container
//! image's default, and the one in the Kubernetes ConfigMap, whose drain
//! timeout must end before the pod's grace period does. (CI checks the
//! Dockerfile and the Kubernetes objects themselves with hadolint and
//! kubernetes-validate; see .ci/run.)

use std::path::Path;
use std::time::Duration;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The `tenants.toml` block of the ConfigMap (a YAML literal block).
fn configmap_manifest() -> String {
    let yaml = std::fs::read_to_string(repo("host/deploy/kubernetes/configmap.yaml")).unwrap();
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "tenants.toml: |");
    lines.next().expect("a tenants.toml entry in the ConfigMap");
    lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_image_default_manifest_is_valid() {
    let path = repo("host/deploy/tenants.container.toml");
    let manifest = host::config::manifest::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(manifest.tenants.len(), 1);
    assert!(manifest.admin.is_some(), "the image serves its probes");
}

#[test]
fn the_configmap_manifest_is_valid_and_drains_within_the_grace_period() {
    let text = configmap_manifest();
    let manifest = host::config::manifest::parse(Path::new("configmap/tenants.toml"), &text)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        manifest.admin.is_some(),
        "readiness needs the admin endpoint"
    );
    let deployment =
        std::fs::read_to_string(repo("host/deploy/kubernetes/deployment.yaml")).unwrap();
    let grace: u64 = deployment
        .lines()
        .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("terminationGracePeriodSeconds in the Deployment");
    // The pod keeps accepting through its preStop delay, then drains.
    let lines: Vec<&str> = deployment.lines().map(str::trim).collect();
    let pre_stop: u64 = lines
        .iter()
        .skip_while(|l| **l != "preStop:")
        .find_map(|l| l.strip_prefix("seconds:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a preStop sleep in the Deployment");
    let service = std::fs::read_to_string(repo("host/deploy/kubernetes/service.yaml")).unwrap();
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
                service.contains(&format!("port: {port}\n      targetPort: {name}\n")),
                "the Service does not expose {}'s port {port} (container port {name:?})",
                tenant.name
            );
        }
    }
}

#[test]
fn the_control_endpoint_is_reachable_only_from_inside_the_pod() {
    let text = configmap_manifest();
    let manifest = host::config::manifest::parse(Path::new("configmap/tenants.toml"), &text)
        .unwrap_or_else(|e| panic!("{e}"));
    let control = manifest.control.expect("the ConfigMap enables control");
    let host::config::manifest::ControlAddr::Tcp(addr) = control.addr else {
        panic!("control on TCP loopback, for kubectl port-forward");
    };
    assert!(addr.ip().is_loopback(), "{addr}");
    let port = format!("port: {}", addr.port());
    for object in ["networkpolicy.yaml", "service.yaml"] {
        let yaml =
            std::fs::read_to_string(repo(&format!("host/deploy/kubernetes/{object}"))).unwrap();
        assert!(!yaml.contains(&port), "{object} exposes the control port");
    }
    // The token file is the mounted Secret's.
    let token = control.token_file.expect("a token file");
    let deployment =
        std::fs::read_to_string(repo("host/deploy/kubernetes/deployment.yaml")).unwrap();
    let dir = token.parent().unwrap().display().to_string();
    assert!(
        deployment.contains(&format!("mountPath: {dir}")),
        "the Deployment mounts {dir}"
    );
    assert!(deployment.contains("secretName: tcphost-control"));
}
