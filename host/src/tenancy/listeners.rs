//! The host's listening sockets for tenants' addresses: every one is
//! opened here, once per address, and handed to each guest version in turn
//! (see crate::wasi::sockets::tcp).

use std::net::{SocketAddr, TcpListener};

/// Opens the host's listener for a tenant address, with a clear error if it
/// is taken or not on this machine; port 0 picks a free port. `listen_at`
/// is where the manifest grants the address (empty on the command line).
pub fn open(addr: SocketAddr, listen_at: &str) -> anyhow::Result<std::net::TcpListener> {
    let instead = if listen_at.is_empty() {
        "pass another --listen".to_owned()
    } else {
        format!("change the tenant's listen at {listen_at}")
    };
    host_listener(addr).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!(
                "listen address {addr} is already in use: stop what is using it or {instead}"
            )
        } else {
            anyhow::anyhow!(
                "cannot listen on {addr}: {e}; use an address of this machine ({instead})"
            )
        }
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
