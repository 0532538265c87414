//! The Kubernetes objects that run a manifest, rendered from it so the
//! manifest is the one source: a ConfigMap holding the manifest (each host
//! watches it, so a change to it is applied live on every replica), and
//! per group of tenants a Deployment (its replicas, `--group`, the ports
//! and the memory the group's limits can take), a Service for its tenants'
//! ports and a NetworkPolicy opening them. `tcphost --config FILE
//! --render-kubernetes` prints them; `host/deploy/kubernetes/` holds what
//! the shipped manifest renders to, checked by `tests/deploy.rs`.

use crate::config::model::{ComponentSource, DEFAULT_GROUP, Manifest, TenantConfig};
use std::fmt::Write;

/// Where the pod mounts the ConfigMap: the manifest is `tenants.toml` in it.
pub const CONFIG_DIR: &str = "/etc/tcphost";

/// What the host itself needs beside its guests' memory (its code,
/// compiled components, buffers), in MiB: the memory request's floor.
pub const HOST_MEMORY_MIB: u64 = 128;

/// Seconds the pod keeps accepting after it starts terminating, before
/// SIGTERM (endpoints leave the Service a moment late).
pub const PRE_STOP_SECONDS: u64 = 5;

/// Renders the objects that run `manifest` (whose text is `text`), with the
/// container `image`. Fails, saying why, on what a pod cannot serve: a
/// tenant on port 0 (a Service needs a fixed port), an admin endpoint on
/// loopback (the probes could not reach it), or none.
pub fn render(manifest: &Manifest, text: &str, image: &str) -> Result<String, String> {
    let admin = manifest
        .admin
        .ok_or("the manifest has no [host] admin endpoint: the pods' probes need one")?;
    if admin.ip().is_loopback() {
        return Err(format!(
            "[host] admin = {admin} is on loopback: the kubelet's probes could not reach it (use 0.0.0.0)"
        ));
    }
    let token_dir = manifest
        .control
        .as_ref()
        .and_then(|c| c.token_file.as_ref())
        .and_then(|f| f.parent());
    let credentials_dir = manifest
        .registry
        .credentials
        .as_ref()
        .and_then(|f| f.parent());
    if token_dir.is_some() && token_dir == credentials_dir {
        return Err(format!(
            "control_token_file and registry_credentials are both in {}: each is a Secret mounted as a directory of its own",
            token_dir.unwrap_or(std::path::Path::new("/")).display()
        ));
    }
    for tenant in &manifest.tenants {
        if manifest.guest_threads.is_none()
            && tenant.limits.instances == crate::config::model::Instances::Auto
        {
            return Err(format!(
                "tenant '{}' runs instances = \"auto\" (one per guest thread): set [host] guest_threads so the pod's memory can be sized",
                tenant.name
            ));
        }
        if let Some(addr) = tenant.listen.iter().find(|a| a.port() == 0) {
            return Err(format!(
                "tenant '{}' listens on {addr}: a Service needs a fixed port",
                tenant.name
            ));
        }
    }
    let mut out = String::new();
    writeln!(
        out,
        "# Rendered from the tenant manifest by `tcphost --config tenants.toml\n# --render-kubernetes --image {image}`: edit the manifest, render again."
    )
    .unwrap();
    out.push_str(&config_map(text));
    for (group, settings) in &manifest.groups {
        let tenants: Vec<&TenantConfig> = manifest
            .tenants
            .iter()
            .filter(|t| t.group == *group)
            .collect();
        if tenants.is_empty() {
            continue;
        }
        let name = object_name(group);
        let ports = ports(&tenants);
        out.push_str(&deployment(
            manifest,
            &name,
            group,
            settings.replicas,
            &tenants,
            &ports,
            image,
        ));
        out.push_str(&service(&name, group, &ports));
        out.push_str(&network_policy(&name, group, &ports, admin.port()));
    }
    Ok(out)
}

/// The objects' name for `group`: `tcphost`, or `tcphost-GROUP`.
fn object_name(group: &str) -> String {
    if group == DEFAULT_GROUP {
        "tcphost".to_owned()
    } else {
        format!("tcphost-{group}")
    }
}

/// A named container port: the tenant's name where it is a valid port
/// name (15 characters, lowercase letters, digits, inner dashes, a letter),
/// else `p` and the port.
struct Port {
    name: String,
    port: u16,
}

fn ports(tenants: &[&TenantConfig]) -> Vec<Port> {
    let mut ports = Vec::new();
    for tenant in tenants {
        for (i, addr) in tenant.listen.iter().enumerate() {
            let name = if i == 0 && valid_port_name(&tenant.name) {
                tenant.name.clone()
            } else {
                format!("p{}", addr.port())
            };
            if ports.iter().any(|p: &Port| p.port == addr.port()) {
                continue;
            }
            ports.push(Port {
                name,
                port: addr.port(),
            });
        }
    }
    ports
}

/// Kubernetes' IANA_SVC_NAME.
fn valid_port_name(name: &str) -> bool {
    name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

fn labels(out: &mut String, indent: &str, group: &str) {
    writeln!(out, "{indent}app.kubernetes.io/name: tcphost").unwrap();
    writeln!(out, "{indent}tcphost/group: {group}").unwrap();
}

fn config_map(text: &str) -> String {
    let mut out = String::from(
        "---\n# The tenant manifest every pod runs, and watches: the kubelet's update\n# of this ConfigMap reaches each pod within its sync period, and each host\n# applies it as a reload (new digests swap live; a change that fails\n# leaves every replica as it was).\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: tcphost-tenants\n  labels:\n    app.kubernetes.io/name: tcphost\ndata:\n  tenants.toml: |2\n",
    );
    for line in text.lines() {
        if line.is_empty() {
            out.push('\n');
        } else {
            writeln!(out, "    {line}").unwrap();
        }
    }
    out
}

/// Memory a group's pod may take: its tenants' `max_memory` for each
/// instance, twice (a swap runs the new version beside the old one while
/// the old one drains), plus the host's own; requested: once, plus the
/// host's own. In MiB.
fn memory_mib(manifest: &Manifest, tenants: &[&TenantConfig]) -> (u64, u64) {
    let threads = manifest.guest_threads.unwrap_or(1);
    let guests: u64 = tenants
        .iter()
        .map(|t| {
            t.limits.max_memory.div_ceil(1 << 20) * u64::from(t.limits.instances.resolve(threads))
        })
        .sum();
    (HOST_MEMORY_MIB + guests, HOST_MEMORY_MIB + 2 * guests)
}

/// The cache volume's size: the compile cache's bound, and the same again
/// for the store of pulled components when a tenant pulls one.
fn cache_mib(manifest: &Manifest, tenants: &[&TenantConfig]) -> u64 {
    let pulls = tenants
        .iter()
        .any(|t| matches!(t.component, ComponentSource::Oci(_)))
        || !manifest.registry.allowed.is_empty();
    let parts = if pulls { 2 } else { 1 };
    (parts * manifest.cache_max_size).div_ceil(1 << 20)
}

fn deployment(
    manifest: &Manifest,
    name: &str,
    group: &str,
    replicas: u32,
    tenants: &[&TenantConfig],
    ports: &[Port],
    image: &str,
) -> String {
    let drain = tenants
        .iter()
        .map(|t| t.limits.drain_timeout.as_secs())
        .max()
        .unwrap_or(0);
    let grace = PRE_STOP_SECONDS + drain + 5;
    let (request, limit) = memory_mib(manifest, tenants);
    let mut out = String::new();
    writeln!(
        out,
        "---\n# Group {group:?}: {} tenant(s), {replicas} replica(s).",
        tenants.len()
    )
    .unwrap();
    out.push_str("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n");
    writeln!(out, "  name: {name}\n  labels:").unwrap();
    labels(&mut out, "    ", group);
    writeln!(
        out,
        "spec:\n  replicas: {replicas}\n  selector:\n    matchLabels:"
    )
    .unwrap();
    labels(&mut out, "      ", group);
    out.push_str(
        "  strategy:\n    type: RollingUpdate\n    rollingUpdate:\n      maxUnavailable: 0\n      maxSurge: 1\n  template:\n    metadata:\n      labels:\n",
    );
    labels(&mut out, "        ", group);
    writeln!(
        out,
        "      annotations:\n        prometheus.io/scrape: \"true\"\n        prometheus.io/port: \"{}\"\n        prometheus.io/path: /metrics",
        manifest.admin.map_or(0, |a| a.port())
    )
    .unwrap();
    writeln!(
        out,
        "    spec:\n      # preStop ({PRE_STOP_SECONDS}s), then SIGTERM: accepting stops, open connections get\n      # the longest drain_timeout ({drain}s), then the host exits.\n      terminationGracePeriodSeconds: {grace}"
    )
    .unwrap();
    out.push_str("      automountServiceAccountToken: false\n      securityContext:\n        runAsNonRoot: true\n        runAsUser: 10001\n        runAsGroup: 10001\n        fsGroup: 10001\n        seccompProfile:\n          type: RuntimeDefault\n      containers:\n        - name: host\n");
    writeln!(
        out,
        "          image: {image}\n          imagePullPolicy: IfNotPresent"
    )
    .unwrap();
    writeln!(
        out,
        "          args: [\"--config\", \"{CONFIG_DIR}/tenants.toml\", \"--group\", \"{group}\", \"--watch\", \"--cache-dir\", \"/var/cache/tcphost\"]"
    )
    .unwrap();
    out.push_str("          env:\n            - name: RUST_LOG\n              value: info\n          ports:\n");
    for port in ports {
        writeln!(
            out,
            "            - name: {}\n              containerPort: {}\n              protocol: TCP",
            port.name, port.port
        )
        .unwrap();
    }
    writeln!(
        out,
        "            - name: admin\n              containerPort: {}\n              protocol: TCP",
        manifest.admin.map_or(0, |a| a.port())
    )
    .unwrap();
    writeln!(
        out,
        "          lifecycle:\n            preStop:\n              sleep:\n                seconds: {PRE_STOP_SECONDS}"
    )
    .unwrap();
    out.push_str("          # Ready once every tenant has started listening, until the host\n          # stops; a tenant that fails later does not make the pod unready (its\n          # neighbours serve): watch /healthz/NAME or tcphost_tenant_state.\n          readinessProbe:\n            httpGet:\n              path: /healthz\n              port: admin\n            periodSeconds: 5\n            failureThreshold: 2\n          livenessProbe:\n            tcpSocket:\n              port: admin\n            initialDelaySeconds: 5\n            periodSeconds: 10\n");
    writeln!(
        out,
        "          # The host ({HOST_MEMORY_MIB} MiB) and its tenants' max_memory per instance; the\n          # limit has room for every tenant twice (a swap's new version beside\n          # the old), so the per-tenant limits act before the kernel does.\n          resources:\n            requests:\n              cpu: 250m\n              memory: {request}Mi\n            limits:\n              memory: {limit}Mi"
    )
    .unwrap();
    out.push_str("          securityContext:\n            allowPrivilegeEscalation: false\n            readOnlyRootFilesystem: true\n            capabilities:\n              drop: [\"ALL\"]\n          volumeMounts:\n            - name: tenants\n");
    writeln!(
        out,
        "              mountPath: {CONFIG_DIR}\n              readOnly: true"
    )
    .unwrap();
    out.push_str("            - name: cache\n              mountPath: /var/cache/tcphost\n");
    let mut volumes = String::new();
    if let Some(token) = manifest
        .control
        .as_ref()
        .and_then(|c| c.token_file.as_ref())
    {
        let dir = token
            .parent()
            .map_or("/".into(), |d| d.display().to_string());
        writeln!(
            out,
            "            - name: control-token\n              mountPath: {dir}\n              readOnly: true"
        )
        .unwrap();
        volumes.push_str("        # The control endpoint's bearer token, created before the first\n        # apply: kubectl create secret generic tcphost-control\n        #   --from-literal=token=\"$(openssl rand -hex 32)\"\n        - name: control-token\n          secret:\n            secretName: tcphost-control\n            defaultMode: 0400\n");
    }
    if let Some(credentials) = &manifest.registry.credentials {
        let dir = credentials
            .parent()
            .map_or("/".into(), |d| d.display().to_string());
        let file = credentials
            .file_name()
            .map_or(String::new(), |f| f.to_string_lossy().into_owned());
        writeln!(
            out,
            "            - name: registry-credentials\n              mountPath: {dir}\n              readOnly: true"
        )
        .unwrap();
        writeln!(
            volumes,
            "        # Registry credentials (host.registry_credentials), for private\n        # registries: kubectl create secret docker-registry tcphost-registry\n        #   --docker-server=REGISTRY --docker-username=USER --docker-password=...\n        # Optional: without it the pods start and pull anonymously.\n        - name: registry-credentials\n          secret:\n            secretName: tcphost-registry\n            optional: true\n            defaultMode: 0400\n            items:\n              - key: .dockerconfigjson\n                path: {file}"
        )
        .unwrap();
    }
    out.push_str("      volumes:\n        - name: tenants\n          configMap:\n            name: tcphost-tenants\n");
    out.push_str(&volumes);
    writeln!(
        out,
        "        # Per pod; survives container restarts: compiled components and\n        # pulled ones (the store a restart starts from if the registry is down).\n        - name: cache\n          emptyDir:\n            sizeLimit: {}Mi",
        cache_mib(manifest, tenants)
    )
    .unwrap();
    out
}

fn service(name: &str, group: &str, ports: &[Port]) -> String {
    let mut out = format!(
        "---\n# Group {group:?}'s tenants' ports, load-balanced over its ready pods. The\n# admin port is not here: see the NetworkPolicy.\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  labels:\n"
    );
    labels(&mut out, "    ", group);
    out.push_str("spec:\n  type: ClusterIP\n  selector:\n");
    labels(&mut out, "    ", group);
    out.push_str("  ports:\n");
    for port in ports {
        writeln!(
            out,
            "    - name: {}\n      port: {}\n      targetPort: {}\n      protocol: TCP",
            port.name, port.port, port.name
        )
        .unwrap();
    }
    out
}

fn network_policy(name: &str, group: &str, ports: &[Port], admin: u16) -> String {
    let mut out = format!(
        "---\n# The tenants' ports are open to all; the read-only admin endpoint only to\n# the monitoring namespace (kubelet probes are not subject to network\n# policies). The control endpoint listens on the pod's loopback only.\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  labels:\n"
    );
    labels(&mut out, "    ", group);
    out.push_str("spec:\n  podSelector:\n    matchLabels:\n");
    labels(&mut out, "      ", group);
    out.push_str("  policyTypes: [\"Ingress\"]\n  ingress:\n    - ports:\n");
    for port in ports {
        writeln!(
            out,
            "        - port: {}\n          protocol: TCP",
            port.port
        )
        .unwrap();
    }
    writeln!(
        out,
        "    - from:\n        - namespaceSelector:\n            matchLabels:\n              kubernetes.io/metadata.name: monitoring\n      ports:\n        - port: {admin}\n          protocol: TCP"
    )
    .unwrap();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::manifest::parse;
    use std::path::Path;

    const MANIFEST: &str = r#"
[host]
admin = "0.0.0.0:9090"

[limits]
max_memory = "64 MiB"
drain_timeout = "20s"

[group.edge]
replicas = 10

[[tenant]]
name = "seed"
component = "builtin:seed"
listen = ["0.0.0.0:9800"]

[[tenant]]
name = "a-very-long-tenant-name"
component = "builtin:echo"
listen = ["0.0.0.0:9801"]
limits = { max_memory = "32 MiB", instances = 2 }

[[tenant]]
name = "front"
group = "edge"
component = "builtin:echo"
listen = ["0.0.0.0:7000", "0.0.0.0:7001"]
"#;

    fn rendered() -> String {
        let manifest = parse(Path::new("tenants.toml"), MANIFEST).unwrap();
        render(&manifest, MANIFEST, "tcphost:test").unwrap()
    }

    #[test]
    fn each_group_is_a_deployment_with_its_own_replicas_ports_and_memory() {
        let text = rendered();
        assert_eq!(text.matches("kind: Deployment").count(), 2);
        assert_eq!(text.matches("kind: Service").count(), 2);
        assert_eq!(text.matches("kind: ConfigMap").count(), 1);
        let edge = &text[text.find("name: tcphost-edge").unwrap()..];
        assert!(edge.contains("replicas: 10"));
        assert!(edge.contains("\"--group\", \"edge\""));
        assert!(edge.contains("containerPort: 7001"));
        let default =
            &text[text.find("kind: Deployment").unwrap()..text.find("name: tcphost-edge").unwrap()];
        assert!(default.contains("replicas: 2"));
        // 64 MiB + 2 x 32 MiB of guests, plus the host's 128 MiB; twice
        // the guests for the limit.
        assert!(default.contains("memory: 256Mi"), "{default}");
        assert!(default.contains("memory: 384Mi"), "{default}");
        // The drain fits the grace period: preStop 5 s + drain 20 s + 5.
        assert!(default.contains("terminationGracePeriodSeconds: 30"));
        // A name too long for a port name is named by its port.
        assert!(default.contains("- name: p9801"));
        assert!(default.contains("- name: seed"));
    }

    #[test]
    fn the_configmap_holds_the_manifest_verbatim() {
        let text = rendered();
        let start = text.find("tenants.toml: |2\n").unwrap() + "tenants.toml: |2\n".len();
        let end = text[start..].find("\n---").unwrap() + start;
        let inner: String = text[start..end]
            .lines()
            .map(|l| l.strip_prefix("    ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(inner.trim(), MANIFEST.trim());
    }

    #[test]
    fn what_a_pod_cannot_serve_is_refused_with_the_reason() {
        for (manifest, why) in [
            (
                "[[tenant]]\nname=\"a\"\ncomponent=\"builtin:seed\"\nlisten=[\"0.0.0.0:9800\"]\n",
                "no [host] admin",
            ),
            (
                "[host]\nadmin=\"127.0.0.1:9090\"\n[[tenant]]\nname=\"a\"\ncomponent=\"builtin:seed\"\nlisten=[\"0.0.0.0:9800\"]\n",
                "on loopback",
            ),
            (
                "[host]\nadmin=\"0.0.0.0:9090\"\n[[tenant]]\nname=\"a\"\ncomponent=\"builtin:seed\"\nlisten=[\"0.0.0.0:0\"]\n",
                "fixed port",
            ),
        ] {
            let parsed = parse(Path::new("t.toml"), manifest).unwrap();
            let err = render(&parsed, manifest, "x").unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }
}
