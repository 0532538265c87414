//! Sockets independent of the WASI version: what a guest's TCP socket is
//! and does ([`tcp`]: its states and operations; [`accept`]: taking a
//! client; [`options`]: its options), and the errors it reports ([`SocketError`]), which
//! each version's bindings map to their own error codes.

pub mod accept;
pub mod connect;
pub mod options;
pub mod order;
pub mod private;
pub mod stream;
pub mod tcp;
pub mod turn;

/// What a socket operation reports to the guest: the error codes WASI
/// sockets have in every version, named as in WASI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketError {
    /// Anything else.
    Unknown,
    /// Not granted (or not permitted by the system).
    AccessDenied,
    /// An argument that is never valid here.
    InvalidArgument,
    /// Not in a state this operation is for.
    InvalidState,
    /// Another operation of the socket is in progress.
    ConcurrencyConflict,
    /// A `finish-` without its `start-`.
    NotInProgress,
    /// Nothing to take now; try again later.
    WouldBlock,
    /// The address is taken.
    AddressInUse,
    /// The address cannot be bound (here: not one of the host's).
    AddressNotBindable,
    /// The guest's or the process's socket limit.
    NewSocketLimit,
    /// The peer refused the connection.
    ConnectionRefused,
    /// The peer reset the connection.
    ConnectionReset,
    /// The connection was aborted.
    ConnectionAborted,
    /// The remote is unreachable.
    RemoteUnreachable,
    /// Timed out.
    Timeout,
    /// Out of memory.
    OutOfMemory,
}

impl SocketError {
    /// The error code for a system error.
    pub fn from_io(e: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::ConnectionRefused => SocketError::ConnectionRefused,
            K::ConnectionReset => SocketError::ConnectionReset,
            K::ConnectionAborted => SocketError::ConnectionAborted,
            K::TimedOut => SocketError::Timeout,
            K::AddrInUse => SocketError::AddressInUse,
            K::AddrNotAvailable => SocketError::AddressNotBindable,
            K::PermissionDenied => SocketError::AccessDenied,
            K::HostUnreachable | K::NetworkUnreachable | K::NetworkDown => {
                SocketError::RemoteUnreachable
            }
            K::OutOfMemory => SocketError::OutOfMemory,
            _ => SocketError::Unknown,
        }
    }
}

/// An IP address family, as a socket is created for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    Ipv4,
    /// IPv6 (IPv6 only: WASI sockets never take IPv4-mapped addresses).
    Ipv6,
}

impl Family {
    /// The family of `addr`.
    pub fn of(addr: &std::net::SocketAddr) -> Self {
        match addr {
            std::net::SocketAddr::V4(_) => Family::Ipv4,
            std::net::SocketAddr::V6(_) => Family::Ipv6,
        }
    }
}

/// The error code for an accepted client (or listener) the host could not
/// take on: out of descriptors or memory is `new-socket-limit`.
pub(crate) fn accept_error(e: &std::io::Error) -> SocketError {
    if crate::limits::admission::is_resource_error(e) {
        SocketError::NewSocketLimit
    } else {
        SocketError::from_io(e)
    }
}
