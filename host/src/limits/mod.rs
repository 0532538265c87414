//! The limits the host enforces on every tenant, each a unit of its own.
//! Where each is enforced (one place each):
//!
//! | Limit (manifest key)                    | Enforced in |
//! |-----------------------------------------|-------------|
//! | `max_memory`, over all memories         | [`memory::MemoryLimiter`] (the store's limiter) |
//! | table elements, handles (100,000)       | [`memory::MemoryLimiter`], [`memory::MAX_RESOURCES`] (the resource table, poll lists) |
//! | `cpu_limit` without a host call         | [`cpu::CpuClock`], asked by the runtime's epoch callback |
//! | `max_connections`, `max_connections_per_peer` | [`admission::Admission::admit`] (at accept), the cap reaper (while the guest does not accept) |
//! | `max_outbound_connections`              | [`admission::Outbound::take`] |
//! | file descriptors (accepts that fail)    | [`admission::AcceptBackoff`] |
//! | `max_bytes_in`, `max_bytes_out`, `idle_timeout` | [`connection::Policed`] |
//! | `log_lines_per_sec`, refusal lines (10/s) | crate::account::log_budget |
//! | closing connections' last bytes (5 s, at most `max_connections`) | the WASI layer's writer (crate::wasi::sockets::tcp) |
//!
//! Below the WASI layer: these modules see a tenant's account and its
//! configuration, never the tenant or its guest.

pub mod admission;
pub mod connection;
pub mod cpu;
pub mod memory;

use std::sync::OnceLock;
use std::time::Duration;
use tokio::time::Instant;

/// The origin of [`now_ms`].
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Milliseconds since [`base`], on a monotonic clock.
pub(crate) fn now_ms() -> u64 {
    u64::try_from(base().elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The instant `ms` (from [`now_ms`]) stands for.
pub(crate) fn instant_at(ms: u64) -> Instant {
    base() + Duration::from_millis(ms)
}
