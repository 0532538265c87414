//! The seam between the WASI layer and the tenants: what the WASI layer
//! may ask of the tenant it serves, and nothing else.

use crate::account::Account;
use crate::config::manifest::Limits;
use crate::limits::admission::{Admission, HostListeners};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

/// What the WASI layer may ask of the tenant it serves, and nothing else
/// (implemented by crate::tenancy's tenant).
pub trait Tenancy: HostListeners {
    /// The tenant's account: name, counters, log budgets.
    fn account(&self) -> &Arc<Account>;
    /// Its admission state: accept gate, back-off, per-peer counts, reaper.
    fn admission(&self) -> &Arc<Admission>;
    /// The host's listener for granted address `addr`, unless closed.
    fn listener(&self, addr: SocketAddr) -> Option<Arc<TcpListener>>;
    /// Whether guest version `generation` may accept new clients now.
    fn may_accept(&self, generation: u64) -> bool;
    /// Guest version `generation` listens on one of its addresses; the
    /// tenant layer decides whether it takes over new clients.
    fn listening(&self, generation: u64);
    /// The tenant's limits now, under which new connections are policed.
    fn limits(&self) -> Limits;
}
