//! The host's listening sockets for tenants' addresses: every one is
//! opened here, once per address, and handed to each guest version in turn
//! (see crate::wasi::sockets::tcp).

use crate::limits::admission::HostListeners;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, MutexGuard};

/// One tenant's host listeners, by granted address: handed to each guest
/// version in turn, and to the reaper of clients past the tenant's cap.
#[derive(Debug, Default)]
pub struct ListenerSet(Mutex<HashMap<SocketAddr, Arc<TcpListener>>>);

impl ListenerSet {
    /// The set of `listeners`, by their addresses.
    pub fn new(listeners: Vec<Arc<TcpListener>>) -> Self {
        let by_addr = listeners
            .into_iter()
            .filter_map(|l| Some((l.local_addr().ok()?, l)))
            .collect();
        ListenerSet(Mutex::new(by_addr))
    }

    fn map(&self) -> MutexGuard<'_, HashMap<SocketAddr, Arc<TcpListener>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds listeners (for addresses a reload grants).
    pub fn add(&self, listeners: impl IntoIterator<Item = (SocketAddr, Arc<TcpListener>)>) {
        self.map().extend(listeners);
    }

    /// Closes the listeners of addresses not in `keep`: they refuse new
    /// clients at once.
    pub fn retain(&self, keep: &[SocketAddr]) {
        self.map().retain(|addr, listener| {
            let kept = keep.contains(addr);
            if !kept {
                refuse_clients(listener);
            }
            kept
        });
    }

    /// The listener for `addr`, unless closed.
    pub fn get(&self, addr: SocketAddr) -> Option<Arc<TcpListener>> {
        self.map().get(&addr).cloned()
    }

    /// Shuts every listener down (they stay in the set): the addresses
    /// refuse new clients at once.
    pub fn refuse_all(&self) {
        for listener in self.map().values() {
            refuse_clients(listener);
        }
    }

    /// Closes and forgets every listener.
    pub fn close_all(&self) {
        for (_, listener) in self.map().drain() {
            refuse_clients(&listener);
        }
    }
}

impl HostListeners for ListenerSet {
    fn listeners(&self) -> Vec<Arc<TcpListener>> {
        self.map().values().cloned().collect()
    }
}

/// Stops a listening socket listening, for every descriptor of it (guest
/// versions hold duplicates, and one still draining would otherwise keep
/// the address accepting clients that nobody serves): new clients are
/// refused, and those queued are reset.
fn refuse_clients(listener: &TcpListener) {
    let _ = socket2::SockRef::from(listener).shutdown(std::net::Shutdown::Both);
}

/// Opens the host's listener for a tenant address, with a clear error if it
/// is taken or not on this machine; port 0 picks a free port. `listen_at`
/// is where the manifest grants the address (empty on the command line).
pub fn open(addr: SocketAddr, listen_at: &str) -> anyhow::Result<std::net::TcpListener> {
    let instead = if listen_at.is_empty() {
        "pass another --listen".to_owned()
    } else {
        format!("change the tenant's listen at {listen_at}")
    };
    // The kind of failure is kept (the exit status says "unavailable").
    host_listener(addr).map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::AddrInUse {
            format!("listen address {addr} is already in use: stop what is using it or {instead}")
        } else {
            format!("cannot listen on {addr}: {e}; use an address of this machine ({instead})")
        };
        anyhow::Error::new(std::io::Error::new(e.kind(), why))
    })
}

/// Binds and listens on `addr` for a tenant: the host's listener, handed to
/// each guest version in turn. Port 0 picks a free port.
pub fn host_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // WASI sockets are IPv6-only: a guest granted `[::]:P` listens on
    // IPv6 alone, and `0.0.0.0:P` stays free for another tenant.
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_ipv6_host_listener_is_ipv6_only_as_wasi_sockets_are() {
        let listener = super::host_listener("[::]:0".parse().unwrap()).unwrap();
        assert!(socket2::SockRef::from(&listener).only_v6().unwrap());
        let v4 = super::host_listener("0.0.0.0:0".parse().unwrap()).unwrap();
        assert!(v4.local_addr().unwrap().is_ipv4());
    }
}
