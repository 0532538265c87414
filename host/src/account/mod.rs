//! A tenant's account: its name, its counters and its log budgets, and the
//! refusal lines written through them. A leaf: every layer (limits, WASI,
//! runtime, tenancy, ops) counts and logs through a tenant's [`Account`],
//! and none needs the tenant itself to do so.

pub mod gauge;
pub mod log_budget;

pub use gauge::Gauge;

use log_budget::{LogBudget, left_out_note};
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::warn;

/// A capability a guest can be refused, as logs and metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Binding or listening on an address not granted.
    TcpBind,
    /// Connecting out to an address not granted.
    TcpConnect,
    /// Any UDP.
    Udp,
    /// Name lookups.
    Dns,
}

impl Capability {
    /// Every kind, in the order counters keep them.
    pub const ALL: [Capability; 4] = [
        Capability::TcpBind,
        Capability::TcpConnect,
        Capability::Udp,
        Capability::Dns,
    ];

    /// The name in logs (`kind` field) and metrics (`kind` label).
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::TcpBind => "tcp-bind",
            Capability::TcpConnect => "tcp-connect",
            Capability::Udp => "udp",
            Capability::Dns => "dns",
        }
    }
}

/// Counters kept per tenant. Relaxed atomics: they are statistics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Client connections open now (a drain waits for it to reach zero).
    pub connections_open: Gauge,
    /// Client connections handed to the guest, ever.
    pub connections_accepted: AtomicU64,
    /// Connections the guest closed whose last bytes the host is still
    /// sending (bounded by the connection cap).
    pub lingering: AtomicU64,
    /// Outbound connections being made or open now.
    pub outbound_open: AtomicU64,
    /// Connections to the guest's own private loopback listeners open now
    /// (crate::wasi::sockets::private).
    pub private_open: AtomicU64,
    /// Outbound connections started, ever.
    pub outbound_started: AtomicU64,
    /// Client connections reset because the tenant was at its cap.
    pub connections_refused: AtomicU64,
    /// Times the guest was started again after stopping.
    pub restarts: AtomicU64,
    /// Traps (panics, CPU limit, out-of-bounds, ...).
    pub traps: AtomicU64,
    /// Times the guest was cut off for computing past its CPU limit.
    pub cpu_limit_kills: AtomicU64,
    /// Memory growths refused at the memory limit.
    pub memory_refusals: AtomicU64,
    /// Capability attempts refused (bind, connect, UDP, DNS).
    pub capability_refusals: AtomicU64,
    /// The same, by kind, indexed by `Capability as usize`.
    pub refusals_by_kind: [AtomicU64; Capability::ALL.len()],
    /// Times the guest asked for its preopened directories (runtimes do at
    /// start-up; not a refusal: none are granted).
    pub preopen_queries: AtomicU64,
    /// Bytes received on the tenant's connections (clients' and outbound).
    pub bytes_in: AtomicU64,
    /// Bytes sent on the tenant's connections (clients' and outbound).
    pub bytes_out: AtomicU64,
    /// Times a running guest was interrupted (epoch tick) to let others run.
    pub cpu_yields: AtomicU64,
    /// Calls between the guest and the host, either way, as wasmtime's call
    /// hook sees them (each import the guest calls, each entry into the
    /// guest, its allocator's included), added by each instance in batches
    /// (crate::runtime::instance).
    pub crossings: AtomicU64,
    /// Linear memory the tenant's instances hold now, in bytes (a gauge).
    pub memory_bytes: AtomicU64,
    /// Lines of guest output left out of the log at its limit.
    pub log_lines_dropped: AtomicU64,
    /// Accepts that failed (out of file descriptors, memory, ...).
    pub accept_errors: AtomicU64,
    /// Client connections the host closed after their idle timeout.
    pub idle_closed: AtomicU64,
    /// Client connections the host closed at a byte limit.
    pub byte_limit_closed: AtomicU64,
}

impl Counters {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds every count of `other` (a tenant being removed) to these, so
    /// host-wide totals never go down.
    pub fn absorb(&self, other: &Counters) {
        for (to, from) in self.all().into_iter().zip(other.all()) {
            to.fetch_add(from.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// Every counter, in one list (for [`Counters::absorb`]).
    fn all(&self) -> Vec<&AtomicU64> {
        let mut all = vec![
            &self.connections_open,
            &self.connections_accepted,
            &self.lingering,
            &self.outbound_open,
            &self.private_open,
            &self.outbound_started,
            &self.connections_refused,
            &self.restarts,
            &self.traps,
            &self.cpu_limit_kills,
            &self.memory_refusals,
            &self.capability_refusals,
            &self.preopen_queries,
            &self.bytes_in,
            &self.bytes_out,
            &self.cpu_yields,
            &self.crossings,
            &self.memory_bytes,
            &self.log_lines_dropped,
            &self.accept_errors,
            &self.idle_closed,
            &self.byte_limit_closed,
        ];
        all.extend(&self.refusals_by_kind);
        all
    }
}

/// One guest instance of a tenant: which it is, and what is counted per
/// instance (a tenant runs `instances` of its component at once, each in
/// its own store). Shared by the instance's sockets, its store and the
/// supervisor; the tenant's own [`Counters`] count the same events for the
/// tenant as a whole.
#[derive(Debug, Default)]
pub struct InstanceAccount {
    /// The guest version it runs (all instances of a version share it;
    /// only the tenant's current version accepts new clients).
    pub generation: u64,
    /// Its place among its version's instances, from 0.
    pub index: u32,
    /// Client connections it holds open now (a drain of its version
    /// waits for it to reach zero).
    pub open: Gauge,
    /// Client connections it accepted, ever.
    pub accepted: AtomicU64,
    /// Times it was interrupted (epoch tick) to let others run.
    pub cpu_yields: AtomicU64,
    /// Times it was started again after stopping.
    pub restarts: AtomicU64,
    /// Whether it listens now (on at least one granted address).
    pub listening: std::sync::atomic::AtomicBool,
    /// Since when (crate::limits' milliseconds, 0: not) it has been
    /// leaving queued clients to a sibling: bounded, see
    /// crate::limits::admission::MAX_DEFER_MS.
    pub deferring_since_ms: AtomicU64,
}

impl InstanceAccount {
    /// Instance `index` of guest version `generation`, all counts zero.
    pub fn new(generation: u64, index: u32) -> Self {
        InstanceAccount {
            generation,
            index,
            ..InstanceAccount::default()
        }
    }

    /// Whether it listens now.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }
}

/// One tenant's name, counters and log budgets.
#[derive(Debug)]
pub struct Account {
    name: String,
    /// Its counters.
    pub counters: Counters,
    /// Bounds how fast lines a guest or its clients can provoke at will
    /// (refusals, listens, connections closed by the host) fill the log.
    pub refusal_log: LogBudget,
    /// Bounds how fast the guest's output fills the log (its limits, in
    /// lines and bytes).
    pub output_log: LogBudget,
}

impl Account {
    /// The account of tenant `name`, all counts zero.
    pub fn new(name: &str) -> Self {
        Account {
            name: name.to_owned(),
            counters: Counters::default(),
            refusal_log: LogBudget::default(),
            output_log: LogBudget::with_rates(0, 0),
        }
    }

    /// The tenant's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a line the guest or its clients provoked may be logged now,
    /// within the budget: `Some` with the note to end it with (how many
    /// were left out before it), `None` to leave it out.
    pub fn may_log(&self) -> Option<String> {
        self.refusal_log.admit(0).map(left_out_note)
    }

    /// Logs (within the budget) and counts a refused attempt at `kind`.
    pub fn refuse(&self, kind: Capability, what: std::fmt::Arguments<'_>) {
        Counters::bump(&self.counters.capability_refusals);
        Counters::bump(&self.counters.refusals_by_kind[kind as usize]);
        if let Some(note) = self.may_log() {
            warn!(
                tenant = self.name(),
                kind = kind.as_str(),
                "refused: {what}{note}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absorbing_a_removed_tenant_adds_every_count_including_refusals_by_kind() {
        let (total, gone) = (Counters::default(), Counters::default());
        gone.bytes_in.store(7, Ordering::Relaxed);
        gone.byte_limit_closed.store(2, Ordering::Relaxed);
        gone.refusals_by_kind[Capability::Dns as usize].store(3, Ordering::Relaxed);
        total.bytes_in.store(1, Ordering::Relaxed);
        total.absorb(&gone);
        assert_eq!(total.bytes_in.load(Ordering::Relaxed), 8);
        assert_eq!(total.byte_limit_closed.load(Ordering::Relaxed), 2);
        assert_eq!(
            total.refusals_by_kind[Capability::Dns as usize].load(Ordering::Relaxed),
            3
        );
    }
}
