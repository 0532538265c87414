//! The admin endpoint's `GET /metrics`: every tenant's counters and the
//! host's totals, in the Prometheus (OpenMetrics) text format, read from
//! the tenants' own counters at scrape time, so serving traffic costs
//! nothing extra for metrics.
//!
//! Totals cover every tenant the host has run: a tenant removed by a
//! manifest reload leaves its counts in them (crate::tenancy::control keeps
//! them), so they never go down.

use crate::account::{Capability, Counters, InstanceAccount};
use crate::tenancy::control::Control;
use crate::tenancy::tenant::State;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::fmt::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every tenant state, as the `state` label names it.
const STATES: [(State, &str); 5] = [
    (State::Starting, "starting"),
    (State::Running, "running"),
    (State::Restarting, "restarting"),
    (State::Stopped, "stopped"),
    (State::Failed, "failed"),
];

/// Control actions, as the `action` label names them.
pub const ACTIONS: [&str; 4] = ["swap", "reload", "status", "other"];
/// Outcomes, as the `outcome` label names them.
pub const OUTCOMES: [&str; 3] = ["ok", "failed", "unauthorized"];

/// Requests to the control endpoint, by action and outcome (counted by
/// crate::ops::admin's audit).
#[derive(Debug, Default)]
pub struct Audited([[AtomicU64; OUTCOMES.len()]; ACTIONS.len()]);

impl Audited {
    /// Every (action, outcome, count).
    pub fn counts(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut all = Vec::new();
        for (a, action) in ACTIONS.iter().enumerate() {
            for (o, outcome) in OUTCOMES.iter().enumerate() {
                all.push((*action, *outcome, self.0[a][o].load(Ordering::Relaxed)));
            }
        }
        all
    }

    /// Counts a request: indices into [`ACTIONS`] and [`OUTCOMES`].
    pub fn count(&self, action: usize, outcome: usize) {
        self.0[action][outcome].fetch_add(1, Ordering::Relaxed);
    }
}

/// The metrics of the host that `control` runs (and of its control
/// endpoint, `audited`), as text.
pub fn render(control: &Arc<Control>, audited: &Arc<Audited>) -> Result<String, Error> {
    let mut registry = Registry::with_prefix("tcphost");
    registry.register_collector(Box::new(Tenants(control.clone(), audited.clone())));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

/// Reads the tenants' counters when scraped.
struct Tenants(Arc<Control>, Arc<Audited>);

impl std::fmt::Debug for Tenants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tenants")
    }
}

/// A per-tenant counter: metric name, help, and where to read it.
type Field = (&'static str, &'static str, fn(&Counters) -> &AtomicU64);

/// Per-tenant counters, each also summed into a `host_` total.
const COUNTERS: [Field; 16] = [
    (
        "connections_accepted",
        "Client connections handed to the guest.",
        |c| &c.connections_accepted,
    ),
    (
        "outbound_connections_started",
        "Outbound connections the guest started under its connect grant.",
        |c| &c.outbound_started,
    ),
    (
        "connections_refused",
        "Client connections reset at a connection cap: the tenant's, or the one per client address.",
        |c| &c.connections_refused,
    ),
    (
        "connections_idle_closed",
        "Client connections the host closed after their idle timeout.",
        |c| &c.idle_closed,
    ),
    (
        "connections_byte_limit_closed",
        "Client connections the host closed at a byte limit.",
        |c| &c.byte_limit_closed,
    ),
    (
        "accept_errors",
        "Accepts that failed for want of a resource (file descriptors, memory).",
        |c| &c.accept_errors,
    ),
    (
        "received_bytes",
        "Bytes received on the tenant's connections: from clients, and on outbound connections it was granted.",
        |c| &c.bytes_in,
    ),
    (
        "sent_bytes",
        "Bytes sent on the tenant's connections: to clients, and on outbound connections it was granted.",
        |c| &c.bytes_out,
    ),
    (
        "guest_traps",
        "Guest traps: panics, CPU limit, out of memory, invalid accesses.",
        |c| &c.traps,
    ),
    (
        "guest_restarts",
        "Times a guest was started again after stopping.",
        |c| &c.restarts,
    ),
    (
        "cpu_yields",
        "Times a running guest was interrupted so that others could run.",
        |c| &c.cpu_yields,
    ),
    (
        "guest_host_crossings",
        "Calls between the tenant's guests and the host, either way, as wasmtime's call hook sees them: imports the guests call (and wasmtime's own built-ins, such as memory growth), entries into the guests (exports, WASI 0.3 callbacks, the guest's allocator when the host returns a list). Added by each instance in batches of 256.",
        |c| &c.crossings,
    ),
    (
        "cpu_limit_kills",
        "Times a guest was cut off for computing past its CPU limit.",
        |c| &c.cpu_limit_kills,
    ),
    (
        "memory_refusals",
        "Linear memory growths refused at the memory limit.",
        |c| &c.memory_refusals,
    ),
    (
        "guest_preopen_queries",
        "Times a guest asked for its preopened directories (language runtimes do at start-up): none are granted; not counted as a refusal.",
        |c| &c.preopen_queries,
    ),
    (
        "guest_log_lines_dropped",
        "Lines of guest output left out of the log at the tenant's log_lines_per_sec or log_bytes_per_sec.",
        |c| &c.log_lines_dropped,
    ),
];

/// Per-tenant gauges, each also summed into a `host_` total.
const GAUGES: [Field; 5] = [
    ("connections_open", "Client connections open now.", |c| {
        &c.connections_open
    }),
    (
        "outbound_connections_open",
        "Outbound connections being made or open now (capped by max_outbound_connections).",
        |c| &c.outbound_open,
    ),
    (
        "private_connections_open",
        "Connections between a guest's own sockets on its private loopback (a language runtime's self-pipe): reachable from nothing else.",
        |c| &c.private_open,
    ),
    (
        "connections_lingering",
        "Connections the guest closed whose last bytes the host is still sending.",
        |c| &c.lingering,
    ),
    (
        "memory_bytes",
        "Linear memory the tenant's guest instances hold.",
        |c| &c.memory_bytes,
    ),
];

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

fn as_gauge(value: u64) -> ConstGauge {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}

impl Collector for Tenants {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), Error> {
        let tenants = self.0.tenants();
        for (name, help, field) in COUNTERS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for t in &tenants {
                let labels = [("tenant", t.name())];
                ConstCounter::new(get(field(t.counters())))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        for (name, help, field) in GAUGES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for t in &tenants {
                let labels = [("tenant", t.name())];
                as_gauge(get(field(t.counters()))).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "capability_refusals",
            "Refused attempts to use a capability the tenant was not granted, by kind.",
            None,
            MetricType::Counter,
        )?;
        for t in &tenants {
            for kind in Capability::ALL {
                let labels = [("tenant", t.name()), ("kind", kind.as_str())];
                let value = get(&t.counters().refusals_by_kind[kind as usize]);
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        encode_instances(&mut encoder, &tenants)?;
        let mut family = encoder.encode_descriptor(
            "tenant_state",
            "1 for the state each tenant is in, 0 for the others.",
            None,
            MetricType::Gauge,
        )?;
        for t in &tenants {
            let now = t.state();
            for (state, label) in STATES {
                let labels = [("tenant", t.name()), ("state", label)];
                as_gauge(u64::from(now == state)).encode(family.encode_family(&labels)?)?;
            }
        }

        // Host-wide totals: the tenants running now, and those removed.
        let retired = self.0.retired();
        let sum = |field: fn(&Counters) -> &AtomicU64| -> u64 {
            tenants.iter().map(|t| get(field(t.counters()))).sum()
        };
        for (name, help, field) in COUNTERS {
            let gone = field(retired);
            let name = format!("host_{name}");
            let help = format!("All tenants: {help}");
            let family = encoder.encode_descriptor(&name, &help, None, MetricType::Counter)?;
            ConstCounter::new(sum(field) + get(gone)).encode(family)?;
        }
        for (name, help, field) in GAUGES {
            let name = format!("host_{name}");
            let help = format!("All tenants: {help}");
            let family = encoder.encode_descriptor(&name, &help, None, MetricType::Gauge)?;
            as_gauge(sum(field)).encode(family)?;
        }
        let family = encoder.encode_descriptor(
            "host_capability_refusals",
            "All tenants: refused attempts to use a capability not granted.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(sum(|c| &c.capability_refusals) + get(&retired.capability_refusals))
            .encode(family)?;
        let mut family = encoder.encode_descriptor(
            "host_capability_refusals_by_kind",
            "All tenants: refused attempts to use a capability not granted, by kind.",
            None,
            MetricType::Counter,
        )?;
        for kind in Capability::ALL {
            let i = kind as usize;
            let value: u64 = tenants
                .iter()
                .map(|t| get(&t.counters().refusals_by_kind[i]))
                .sum::<u64>()
                + get(&retired.refusals_by_kind[i]);
            ConstCounter::new(value).encode(family.encode_family(&[("kind", kind.as_str())])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "control_requests",
            "Requests to the control endpoint, by action (swap, reload, status, other) and outcome (ok, failed, unauthorized).",
            None,
            MetricType::Counter,
        )?;
        for (action, outcome, count) in self.1.counts() {
            ConstCounter::new(count)
                .encode(family.encode_family(&[("action", action), ("outcome", outcome)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "host_tenants",
            "Tenants in each state.",
            None,
            MetricType::Gauge,
        )?;
        for (state, label) in STATES {
            let count = tenants.iter().filter(|t| t.state() == state).count();
            as_gauge(count as u64).encode(family.encode_family(&[("state", label)])?)?;
        }
        encode_components(&mut encoder, &tenants, self.0.pull_stats())?;
        let mut family = encoder.encode_descriptor(
            "manifest_reloads",
            "Manifest reloads (SIGHUP, the control endpoint, the manifest watcher) by outcome: applied, partial (some tenants' changes failed), refused (nothing changed).",
            None,
            MetricType::Counter,
        )?;
        for (outcome, count) in self.0.reload_counts() {
            ConstCounter::new(count).encode(family.encode_family(&[("outcome", outcome)])?)?;
        }
        if let Some((rss, fds)) = process_usage() {
            let family = encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory of the host process.",
                None,
                MetricType::Gauge,
            )?;
            as_gauge(rss).encode(family)?;
            let family = encoder.encode_descriptor(
                "process_open_fds",
                "Open file descriptors of the host process.",
                None,
                MetricType::Gauge,
            )?;
            as_gauge(fds).encode(family)?;
        }
        Ok(())
    }
}

/// What each tenant runs (its component, a pulled one named by digest),
/// and the pulls from OCI registries by outcome, bytes and time.
fn encode_components(
    encoder: &mut DescriptorEncoder<'_>,
    tenants: &[Arc<crate::tenancy::tenant::Tenant>],
    pulls: &crate::registry::PullStats,
) -> Result<(), Error> {
    let mut family = encoder.encode_descriptor(
        "tenant_component",
        "1, labelled with the component the tenant runs (an OCI one by digest).",
        None,
        MetricType::Gauge,
    )?;
    for t in tenants {
        let component = t.config().component.to_string();
        let labels = [("tenant", t.name()), ("component", component.as_str())];
        as_gauge(1).encode(family.encode_family(&labels)?)?;
    }
    let mut family = encoder.encode_descriptor(
        "registry_pulls",
        "Components fetched from OCI registries, by outcome: pulled, stored (found in the local store, nothing pulled), failed (after retries).",
        None,
        MetricType::Counter,
    )?;
    for (outcome, count) in [
        ("pulled", &pulls.pulled),
        ("stored", &pulls.stored),
        ("failed", &pulls.failed),
    ] {
        ConstCounter::new(get(count)).encode(family.encode_family(&[("outcome", outcome)])?)?;
    }
    let family = encoder.encode_descriptor(
        "registry_pull_bytes",
        "Bytes of components pulled from OCI registries.",
        None,
        MetricType::Counter,
    )?;
    ConstCounter::new(get(&pulls.bytes)).encode(family)?;
    let family = encoder.encode_descriptor(
        "registry_pull_seconds",
        "Time spent pulling components from OCI registries (divide by registry_pulls{outcome=\"pulled\"} for the mean).",
        None,
        MetricType::Counter,
    )?;
    ConstCounter::new(get(&pulls.micros) as f64 / 1e6).encode(family)?;
    Ok(())
}

/// Per-instance counts of the instances of each tenant's accepting
/// version, labelled with the instance's place (`index`): how evenly its
/// clients are spread, and which instance restarts or is made to yield.
/// A swap starts new instances, whose counters start from zero.
fn encode_instances(
    encoder: &mut DescriptorEncoder<'_>,
    tenants: &[Arc<crate::tenancy::tenant::Tenant>],
) -> Result<(), Error> {
    type InstanceField = (
        &'static str,
        &'static str,
        MetricType,
        fn(&InstanceAccount) -> u64,
    );
    const FIELDS: [InstanceField; 4] = [
        (
            "instance_connections_open",
            "Client connections an instance of the tenant's accepting version holds open.",
            MetricType::Gauge,
            |i| get(&i.open),
        ),
        (
            "instance_connections_accepted",
            "Client connections an instance of the tenant's accepting version accepted.",
            MetricType::Counter,
            |i| get(&i.accepted),
        ),
        (
            "instance_restarts",
            "Times an instance of the tenant's accepting version was started again.",
            MetricType::Counter,
            |i| get(&i.restarts),
        ),
        (
            "instance_cpu_yields",
            "Times an instance of the tenant's accepting version was interrupted to let others run.",
            MetricType::Counter,
            |i| get(&i.cpu_yields),
        ),
    ];
    let all: Vec<_> = tenants.iter().map(|t| (t, t.instances())).collect();
    for (name, help, kind, field) in FIELDS {
        let mut family = encoder.encode_descriptor(name, help, None, kind)?;
        for (t, instances) in &all {
            for i in instances {
                let index = i.index.to_string();
                // Not `instance`: Prometheus names each scrape target so.
                let labels = [("tenant", t.name()), ("index", index.as_str())];
                let value = field(i);
                match kind {
                    MetricType::Counter => {
                        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
                    }
                    _ => as_gauge(value).encode(family.encode_family(&labels)?)?,
                }
            }
        }
    }
    Ok(())
}

/// The host process's resident memory in bytes and open file descriptors,
/// from `/proc` (Linux).
fn process_usage() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some((rss_kib * 1024, fds))
}

#[cfg(test)]
mod tests {
    use super::{COUNTERS, Counters, GAUGES};
    use std::sync::atomic::Ordering;

    #[test]
    fn a_removed_tenant_leaves_every_metric_counter_in_the_host_totals() {
        let (total, gone) = (Counters::default(), Counters::default());
        // A distinct count in every field the metrics read.
        for (i, (_, _, field)) in COUNTERS.iter().chain(GAUGES.iter()).enumerate() {
            field(&gone).store(i as u64 + 1, Ordering::Relaxed);
        }
        total.absorb(&gone);
        for (i, (name, _, field)) in COUNTERS.iter().chain(GAUGES.iter()).enumerate() {
            assert_eq!(
                field(&total).load(Ordering::Relaxed),
                i as u64 + 1,
                "{name}"
            );
        }
    }
}
