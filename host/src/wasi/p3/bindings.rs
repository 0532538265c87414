//! The `wasi:sockets@0.3.0` bindings, generated from `wit/p3/`, and the
//! conversions between their types and the socket core's.

use crate::wasi::sockets::SocketError;
use std::net::SocketAddr;
use wasi::sockets::types::{self, ErrorCode, IpSocketAddress};

wasmtime::component::bindgen!({
    path: "../wit/p3",
    world: "wasi:sockets/imports@0.3.0",
    imports: {
        "wasi:sockets/types.[method]tcp-socket.listen": store | trappable,
        "wasi:sockets/types.[method]tcp-socket.send": store | trappable,
        "wasi:sockets/types.[method]tcp-socket.receive": store | trappable,
        default: trappable,
    },
    require_store_data_send: true,
    with: {
        "wasi:clocks": wasmtime_wasi::p3::bindings::clocks,
        "wasi:sockets/types.tcp-socket": crate::wasi::sockets::tcp::TcpSocket,
        "wasi:sockets/types.udp-socket": NoUdpSocket,
    },
});

/// A UDP socket: there is none. `create` is refused, so no handle to one
/// ever exists, and every method of it is unreachable.
pub enum NoUdpSocket {}

/// The WASI 0.3 error code for a socket error. 0.3 dropped the codes of
/// 0.2's two-phase calls (`would-block`, `concurrency-conflict`,
/// `not-in-progress`), which its calls cannot produce, and
/// `new-socket-limit`, which the host still has (a tenant's outbound cap,
/// the process's descriptors): that one is `other("new-socket-limit")`.
pub fn error_code(e: SocketError) -> ErrorCode {
    match e {
        SocketError::AccessDenied => ErrorCode::AccessDenied,
        SocketError::InvalidArgument => ErrorCode::InvalidArgument,
        SocketError::InvalidState
        | SocketError::ConcurrencyConflict
        | SocketError::NotInProgress => ErrorCode::InvalidState,
        SocketError::AddressInUse => ErrorCode::AddressInUse,
        SocketError::AddressNotBindable => ErrorCode::AddressNotBindable,
        SocketError::NewSocketLimit => ErrorCode::Other(Some("new-socket-limit".into())),
        SocketError::ConnectionRefused => ErrorCode::ConnectionRefused,
        SocketError::ConnectionReset => ErrorCode::ConnectionReset,
        SocketError::ConnectionAborted => ErrorCode::ConnectionAborted,
        SocketError::RemoteUnreachable => ErrorCode::RemoteUnreachable,
        SocketError::Timeout => ErrorCode::Timeout,
        SocketError::OutOfMemory => ErrorCode::OutOfMemory,
        SocketError::WouldBlock | SocketError::Unknown => ErrorCode::Other(None),
    }
}

impl From<IpSocketAddress> for SocketAddr {
    fn from(addr: IpSocketAddress) -> Self {
        use wasmtime_wasi::p2::bindings::sockets::network as p2;
        SocketAddr::from(match addr {
            IpSocketAddress::Ipv4(a) => p2::IpSocketAddress::Ipv4(p2::Ipv4SocketAddress {
                port: a.port,
                address: a.address,
            }),
            IpSocketAddress::Ipv6(a) => p2::IpSocketAddress::Ipv6(p2::Ipv6SocketAddress {
                port: a.port,
                flow_info: a.flow_info,
                address: a.address,
                scope_id: a.scope_id,
            }),
        })
    }
}

impl From<SocketAddr> for IpSocketAddress {
    fn from(addr: SocketAddr) -> Self {
        use wasmtime_wasi::p2::bindings::sockets::network as p2;
        match p2::IpSocketAddress::from(addr) {
            p2::IpSocketAddress::Ipv4(a) => IpSocketAddress::Ipv4(types::Ipv4SocketAddress {
                port: a.port,
                address: a.address,
            }),
            p2::IpSocketAddress::Ipv6(a) => IpSocketAddress::Ipv6(types::Ipv6SocketAddress {
                port: a.port,
                flow_info: a.flow_info,
                address: a.address,
                scope_id: a.scope_id,
            }),
        }
    }
}
