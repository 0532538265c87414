//! The listeners on WASI 0.3: reads the granted addresses from the
//! environment, binds and listens on them, and converts between WASI and
//! std socket addresses.

use crate::bindings::wasi::cli::environment::get_environment;
use crate::bindings::wasi::sockets::types::{
    ErrorCode, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress, TcpSocket,
};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use wit_bindgen::StreamReader;

/// The environment variable in which the host passes the granted address.
pub const LISTEN_ADDR: &str = "LISTEN_ADDR";

/// The environment variable in which the host passes every granted
/// address, comma-separated (the first is also in `LISTEN_ADDR`).
pub const LISTEN_ADDRS: &str = "LISTEN_ADDRS";

/// How many not-yet-accepted connections the kernel queues for us; large
/// enough that a burst of clients is not dropped while we serve others.
const BACKLOG: u64 = 1024;

/// The addresses this guest was granted: `LISTEN_ADDRS`, or `LISTEN_ADDR`
/// from a host that sets only that.
pub fn listen_addrs() -> Result<Vec<SocketAddr>, String> {
    let env = get_environment();
    let get = |name: &str| {
        env.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .filter(|value| !value.is_empty())
    };
    let (name, value) = match (get(LISTEN_ADDRS), get(LISTEN_ADDR)) {
        (Some(all), _) => (LISTEN_ADDRS, all),
        (None, Some(first)) => (LISTEN_ADDR, first),
        (None, None) => {
            return Err(format!(
                "{LISTEN_ADDR} is not set; the host passes the granted address in it"
            ));
        }
    };
    value
        .split(',')
        .map(|addr| {
            addr.trim()
                .parse()
                .map_err(|e| format!("{name}={value:?}: {addr:?} is not an ip:port address: {e}"))
        })
        .collect()
}

/// A listening socket and the stream its clients arrive on.
pub struct Listener {
    // Field order is drop order: the clients' stream before the socket.
    /// The clients, one connected socket each.
    pub clients: StreamReader<TcpSocket>,
    /// The listening socket.
    pub socket: TcpSocket,
}

/// Binds and listens on `addr`.
pub fn listen(addr: SocketAddr) -> Result<Listener, ErrorCode> {
    let family = match addr {
        SocketAddr::V4(_) => IpAddressFamily::Ipv4,
        SocketAddr::V6(_) => IpAddressFamily::Ipv6,
    };
    let socket = TcpSocket::create(family)?;
    socket.bind(to_wasi(addr))?;
    // Not every host honours the hint; a smaller backlog is not an error.
    let _ = socket.set_listen_backlog_size(BACKLOG);
    let clients = socket.listen()?;
    Ok(Listener { clients, socket })
}

/// Converts a std address to its WASI form.
pub fn to_wasi(addr: SocketAddr) -> IpSocketAddress {
    match addr {
        SocketAddr::V4(a) => {
            let o = a.ip().octets();
            IpSocketAddress::Ipv4(Ipv4SocketAddress {
                port: a.port(),
                address: (o[0], o[1], o[2], o[3]),
            })
        }
        SocketAddr::V6(a) => {
            let s = a.ip().segments();
            IpSocketAddress::Ipv6(Ipv6SocketAddress {
                port: a.port(),
                flow_info: a.flowinfo(),
                address: (s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
                scope_id: a.scope_id(),
            })
        }
    }
}

/// Converts a WASI address to its std form.
pub fn from_wasi(addr: IpSocketAddress) -> SocketAddr {
    match addr {
        IpSocketAddress::Ipv4(a) => {
            let (b0, b1, b2, b3) = a.address;
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(b0, b1, b2, b3), a.port))
        }
        IpSocketAddress::Ipv6(a) => {
            let (s0, s1, s2, s3, s4, s5, s6, s7) = a.address;
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::new(s0, s1, s2, s3, s4, s5, s6, s7),
                a.port,
                a.flow_info,
                a.scope_id,
            ))
        }
    }
}
