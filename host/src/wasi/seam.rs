//! The seam between the WASI layer and the tenants: what the WASI layer
//! may ask of the tenant it serves, and nothing else.

use crate::account::{Account, InstanceAccount};
use crate::limits::admission::{Admission, OpenConnection};
use crate::limits::connection::Policed;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::Arc;

/// What the WASI layer may ask of the tenant it serves, and nothing else
/// (implemented by crate::tenancy's tenant).
pub trait Tenancy: Send + Sync {
    /// The tenant's account: name, counters, log budgets (to count and
    /// log what the guest does).
    fn account(&self) -> &Arc<Account>;
    /// Its admission unit (crate::limits::admission): the accept gate and
    /// back-off, and the caps each client is admitted against.
    fn admission(&self) -> &Arc<Admission>;
    /// The host's listener for granted address `addr`, unless closed.
    fn listener(&self, addr: SocketAddr) -> Option<Arc<TcpListener>>;
    /// Whether guest version `generation` may accept new clients now
    /// (every instance of the current version may).
    fn may_accept(&self, generation: u64) -> bool;
    /// Whether `instance`, with a client queued for it, should leave that
    /// client to a sibling for now (the tenant's instances balance new
    /// clients: crate::limits::admission::defer_to_sibling).
    fn defer_accept(&self, instance: &InstanceAccount) -> bool;
    /// `instance` listens on one of its addresses; the tenant layer
    /// decides whether its version takes over new clients.
    fn listening(&self, instance: &InstanceAccount);
    /// The policing of a new connection with `peer`, under the tenant's
    /// limits now.
    fn police(&self, peer: SocketAddr) -> Arc<Policed>;
    /// Counts an admitted client from `peer` as open, against the tenant's
    /// cap of `cap` and in `instance` (the guest instance's own counts),
    /// while the returned value lives; at the cap, the tenant resets the
    /// clients queued on its listeners that the guest does not take.
    fn open_connection(
        &self,
        peer: IpAddr,
        cap: u64,
        instance: &Arc<InstanceAccount>,
        watchdog: Option<tokio::task::AbortHandle>,
    ) -> OpenConnection;
    /// The tenant's connection cap now (which also bounds the closed
    /// connections whose last bytes are still being sent).
    fn max_connections(&self) -> u64;
    /// The host's own endpoints, which no grant of the tenant's reaches.
    fn host_endpoints(&self) -> &Arc<crate::policy::HostEndpoints>;
}
