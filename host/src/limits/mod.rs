//! The limits the host enforces on every tenant, each a unit of its own.
//! Where each is enforced (one place each):
//!
//! | Limit (manifest key)                    | Enforced in |
//! |-----------------------------------------|-------------|
//! | `max_memory`, over all memories         | [`memory::MemoryLimiter`] (the store's limiter) |
//! | table elements (100,000), instances (64), tables (64), memories (16) | [`memory::MemoryLimiter`] |
//! | handles (100,000): sockets, streams, pollables | [`memory::MAX_RESOURCES`]: the resource table (crate::wasi::view), `poll` lists (crate::wasi::p2::poll) |
//! | random bytes at once (`max_memory`)     | wasmtime-wasi's context, as crate::wasi::view builds it |
//! | `cpu_limit` without a host call         | [`cpu::CpuClock`], asked by the runtime's epoch callback (crate::runtime::instance) |
//! | `max_connections`, `max_connections_per_peer` | [`admission::Admission::admit`] (at accept), the cap reaper (while the guest does not accept) |
//! | `max_outbound_connections`              | [`admission::Outbound::take`] |
//! | one socket per granted address per instance | the socket's claim (crate::wasi::sockets::tcp) |
//! | private loopback ports (64 per instance) | crate::wasi::sockets::private (`PrivateNet::bind`) |
//! | file descriptors (accepts that fail)    | [`admission::AcceptBackoff`] |
//! | `max_bytes_in`, `max_bytes_out`, `idle_timeout` | [`connection::Policed`] |
//! | closing connections' last bytes (5 s, at most `max_connections`) | the write half (crate::wasi::sockets::stream) |
//! | `log_lines_per_sec`, refusal lines (10/s) | crate::account::log_budget |
//! | the pooling allocator's shares (2 memories, 8 tables, 32 core instances per component) | crate::runtime::engine |
//! | `restart`, `restart_backoff`/`_max`, `crash_loop_limit`/`_window`, `drain_timeout`, versions draining at once (16; 1 with the pooling allocator) | crate::tenancy::supervisor (and crate::tenancy::control for removed tenants) |
//!
//! Below the WASI layer: these modules see a tenant's account and its
//! configuration, and the cap reaper its listeners; never the tenant or
//! its guest.

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
