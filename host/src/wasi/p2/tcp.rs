//! `wasi:sockets/tcp` and `tcp-create-socket` (WASI 0.2) over the host's
//! version-independent sockets (crate::wasi::sockets::tcp): each function
//! converts its arguments, asks the socket, and puts what it returns into
//! the guest's resource table.

use super::streams::push_streams;
use crate::wasi::poll::Fast;
use crate::wasi::sockets::tcp::{Buffer, Connection, Options, TcpSocket, buffer_request};
use crate::wasi::sockets::{Family, SocketError};
use crate::wasi::view::{GuestWasi, WasiHost};
use std::net::SocketAddr;
use wasmtime::component::Resource;
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddressFamily, IpSocketAddress};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, Pollable};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        inline: "
            package tcphost:host;
            world sockets {
                import wasi:sockets/tcp@0.2.12;
                import wasi:sockets/tcp-create-socket@0.2.12;
            }
        ",
        world: "tcphost:host/sockets",
        imports: { default: trappable },
        require_store_data_send: true,
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:sockets/network": wasmtime_wasi::p2::bindings::sockets::network,
            "wasi:sockets/tcp.tcp-socket": crate::wasi::sockets::tcp::TcpSocket,
        },
    });
}

use bindings::wasi::sockets::tcp::{self, Duration as WasiDuration, HostTcpSocket, ShutdownType};
use bindings::wasi::sockets::tcp_create_socket;

/// A connection as `accept` hands it to the guest: the socket and its
/// input and output streams.
type Accepted = (
    Resource<TcpSocket>,
    Resource<DynInputStream>,
    Resource<DynOutputStream>,
);

/// What a function returns: a trap, or the guest's result.
type Answer<T> = wasmtime::Result<Result<T, ErrorCode>>;

/// Replaces wasmtime-wasi's TCP with the host's in `linker`.
pub fn add_to_linker<T: WasiHost>(
    linker: &mut wasmtime::component::Linker<T>,
) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    tcp::add_to_linker::<T, HasSelf<GuestWasi>>(linker, T::wasi)?;
    tcp_create_socket::add_to_linker::<T, HasSelf<GuestWasi>>(linker, T::wasi)?;
    Ok(())
}

impl From<SocketError> for ErrorCode {
    fn from(e: SocketError) -> Self {
        match e {
            SocketError::Unknown => ErrorCode::Unknown,
            SocketError::AccessDenied => ErrorCode::AccessDenied,
            SocketError::InvalidArgument => ErrorCode::InvalidArgument,
            SocketError::InvalidState => ErrorCode::InvalidState,
            SocketError::ConcurrencyConflict => ErrorCode::ConcurrencyConflict,
            SocketError::NotInProgress => ErrorCode::NotInProgress,
            SocketError::WouldBlock => ErrorCode::WouldBlock,
            SocketError::AddressInUse => ErrorCode::AddressInUse,
            SocketError::AddressNotBindable => ErrorCode::AddressNotBindable,
            SocketError::NewSocketLimit => ErrorCode::NewSocketLimit,
            SocketError::ConnectionRefused => ErrorCode::ConnectionRefused,
            SocketError::ConnectionReset => ErrorCode::ConnectionReset,
            SocketError::ConnectionAborted => ErrorCode::ConnectionAborted,
            SocketError::RemoteUnreachable => ErrorCode::RemoteUnreachable,
            SocketError::Timeout => ErrorCode::Timeout,
            SocketError::OutOfMemory => ErrorCode::OutOfMemory,
        }
    }
}

fn family(family: IpAddressFamily) -> Family {
    match family {
        IpAddressFamily::Ipv4 => Family::Ipv4,
        IpAddressFamily::Ipv6 => Family::Ipv6,
    }
}

/// The guest's result of a socket operation.
fn answer<T, U: From<T>>(result: Result<T, SocketError>) -> Answer<U> {
    Ok(result.map(U::from).map_err(ErrorCode::from))
}

#[wasmtime_wasi::async_trait]
impl Pollable for TcpSocket {
    async fn ready(&mut self) {
        TcpSocket::ready(self).await;
    }
}

impl GuestWasi {
    /// Pushes a connection (`socket` and its streams) into the guest's
    /// table; a full table (the guest's handle limit) is
    /// `new-socket-limit`, never a trap.
    fn push_connection(&mut self, connection: Connection) -> Answer<Accepted> {
        let Connection {
            socket,
            stream,
            policed,
        } = connection;
        let Ok(client) = self.table().push(socket) else {
            return Ok(Err(ErrorCode::NewSocketLimit));
        };
        match push_streams(self, &client, &stream, policed) {
            Ok((input, output)) => Ok(Ok((client, input, output))),
            Err(_) => {
                self.table().delete(client)?;
                Ok(Err(ErrorCode::NewSocketLimit))
            }
        }
    }

    /// Stores a socket option that must not be zero (WASI's rule for every
    /// size, count and duration option), as [`TcpSocket::set_option`].
    fn set_nonzero<V: PartialEq + Default>(
        &mut self,
        this: &Resource<TcpSocket>,
        value: V,
        store: impl FnOnce(&mut Options, V),
        apply: fn(&Options, &socket2::SockRef<'_>, Family),
    ) -> Answer<()> {
        if value == V::default() {
            return Ok(Err(ErrorCode::InvalidArgument));
        }
        self.table()
            .get_mut(this)?
            .set_option(|options| store(options, value), apply);
        Ok(Ok(()))
    }

    /// An option's value.
    fn option<V>(&mut self, this: &Resource<TcpSocket>, get: fn(&Options) -> V) -> Answer<V> {
        Ok(Ok(get(&self.table().get(this)?.options)))
    }
}

impl tcp_create_socket::Host for GuestWasi {
    fn create_tcp_socket(&mut self, af: IpAddressFamily) -> Answer<Resource<TcpSocket>> {
        let socket = TcpSocket::new(family(af), self.instance.clone(), self.tenant.clone());
        Ok(Ok(self.table().push(socket)?))
    }
}

impl tcp::Host for GuestWasi {}

impl HostTcpSocket for GuestWasi {
    fn start_bind(
        &mut self,
        this: Resource<TcpSocket>,
        _network: Resource<wasmtime_wasi::p2::Network>,
        local: IpSocketAddress,
    ) -> Answer<()> {
        let (grant, claims) = (self.grant.clone(), self.claims.clone());
        let cap = self.limits.max_outbound_connections;
        let socket = self.table().get_mut(&this)?;
        answer(socket.start_bind(SocketAddr::from(local), &grant, &claims, cap))
    }

    fn finish_bind(&mut self, this: Resource<TcpSocket>) -> Answer<()> {
        answer(self.table().get_mut(&this)?.finish_bind())
    }

    fn start_connect(
        &mut self,
        this: Resource<TcpSocket>,
        _network: Resource<wasmtime_wasi::p2::Network>,
        remote: IpSocketAddress,
    ) -> Answer<()> {
        let (grant, claims) = (self.grant.clone(), self.claims.clone());
        let cap = self.limits.max_outbound_connections;
        let socket = self.table().get_mut(&this)?;
        answer(socket.start_connect(SocketAddr::from(remote), &grant, cap, &claims))
    }

    fn finish_connect(
        &mut self,
        this: Resource<TcpSocket>,
    ) -> Answer<(Resource<DynInputStream>, Resource<DynOutputStream>)> {
        let (stream, policed) = match self.table().get_mut(&this)?.finish_connect() {
            Ok(connected) => connected,
            Err(e) => return Ok(Err(e.into())),
        };
        match push_streams(self, &this, &stream, policed) {
            Ok(streams) => Ok(Ok(streams)),
            // The guest's handle limit: the connection is closed.
            Err(_) => {
                self.table().get_mut(&this)?.close();
                Ok(Err(ErrorCode::NewSocketLimit))
            }
        }
    }

    fn start_listen(&mut self, this: Resource<TcpSocket>) -> Answer<()> {
        let grant = self.grant.clone();
        answer(self.table().get_mut(&this)?.start_listen(&grant))
    }

    fn finish_listen(&mut self, this: Resource<TcpSocket>) -> Answer<()> {
        answer(self.table().get_mut(&this)?.finish_listen())
    }

    fn accept(&mut self, this: Resource<TcpSocket>) -> Answer<Accepted> {
        let limits = self.limits.clone();
        match self.table().get(&this)?.accept(&limits) {
            Ok(connection) => self.push_connection(connection),
            Err(e) => Ok(Err(e.into())),
        }
    }

    fn local_address(&mut self, this: Resource<TcpSocket>) -> Answer<IpSocketAddress> {
        answer(self.table().get(&this)?.local_address())
    }

    fn remote_address(&mut self, this: Resource<TcpSocket>) -> Answer<IpSocketAddress> {
        answer(self.table().get(&this)?.remote_address())
    }

    fn is_listening(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<bool> {
        Ok(self.table().get(&this)?.is_listening())
    }

    fn address_family(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<IpAddressFamily> {
        Ok(match self.table().get(&this)?.family() {
            Family::Ipv4 => IpAddressFamily::Ipv4,
            Family::Ipv6 => IpAddressFamily::Ipv6,
        })
    }

    fn set_listen_backlog_size(&mut self, this: Resource<TcpSocket>, value: u64) -> Answer<()> {
        answer(self.table().get(&this)?.set_listen_backlog_size(value))
    }

    fn keep_alive_enabled(&mut self, this: Resource<TcpSocket>) -> Answer<bool> {
        self.option(&this, |o| o.keep_alive)
    }

    fn set_keep_alive_enabled(&mut self, this: Resource<TcpSocket>, value: bool) -> Answer<()> {
        self.table()
            .get_mut(&this)?
            .set_option(|o| o.keep_alive = value, Options::apply_keep_alive);
        Ok(Ok(()))
    }

    fn keep_alive_idle_time(&mut self, this: Resource<TcpSocket>) -> Answer<WasiDuration> {
        self.option(&this, |o| o.keep_alive_idle)
    }

    fn set_keep_alive_idle_time(
        &mut self,
        this: Resource<TcpSocket>,
        value: WasiDuration,
    ) -> Answer<()> {
        self.set_nonzero(
            &this,
            value,
            |o, v| o.keep_alive_idle = v,
            Options::apply_keep_alive_params,
        )
    }

    fn keep_alive_interval(&mut self, this: Resource<TcpSocket>) -> Answer<WasiDuration> {
        self.option(&this, |o| o.keep_alive_interval)
    }

    fn set_keep_alive_interval(
        &mut self,
        this: Resource<TcpSocket>,
        value: WasiDuration,
    ) -> Answer<()> {
        self.set_nonzero(
            &this,
            value,
            |o, v| o.keep_alive_interval = v,
            Options::apply_keep_alive_params,
        )
    }

    fn keep_alive_count(&mut self, this: Resource<TcpSocket>) -> Answer<u32> {
        self.option(&this, |o| o.keep_alive_count)
    }

    fn set_keep_alive_count(&mut self, this: Resource<TcpSocket>, value: u32) -> Answer<()> {
        self.set_nonzero(
            &this,
            value,
            |o, v| o.keep_alive_count = v,
            Options::apply_keep_alive_params,
        )
    }

    fn hop_limit(&mut self, this: Resource<TcpSocket>) -> Answer<u8> {
        self.option(&this, |o| o.hop_limit)
    }

    fn set_hop_limit(&mut self, this: Resource<TcpSocket>, value: u8) -> Answer<()> {
        self.set_nonzero(
            &this,
            value,
            |o, v| o.hop_limit = v,
            Options::apply_hop_limit,
        )
    }

    fn receive_buffer_size(&mut self, this: Resource<TcpSocket>) -> Answer<u64> {
        Ok(Ok(self.table().get(&this)?.buffer_size(Buffer::Receive)))
    }

    fn set_receive_buffer_size(&mut self, this: Resource<TcpSocket>, value: u64) -> Answer<()> {
        let size = buffer_request(value);
        self.set_nonzero(
            &this,
            size,
            |o, v| o.receive_buffer = Some(v),
            Options::apply_buffers,
        )
    }

    fn send_buffer_size(&mut self, this: Resource<TcpSocket>) -> Answer<u64> {
        Ok(Ok(self.table().get(&this)?.buffer_size(Buffer::Send)))
    }

    fn set_send_buffer_size(&mut self, this: Resource<TcpSocket>, value: u64) -> Answer<()> {
        let size = buffer_request(value);
        self.set_nonzero(
            &this,
            size,
            |o, v| o.send_buffer = Some(v),
            Options::apply_buffers,
        )
    }

    fn subscribe(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<Resource<DynPollable>> {
        let fast = self
            .table()
            .get(&this)?
            .accept_readiness()
            .map(Fast::Accept);
        let pollable = wasmtime_wasi::p2::subscribe(self.table(), this)?;
        match fast {
            Some(fast) => self.fast.add_pollable(pollable.rep(), fast),
            None => self.fast.add_unchecked_socket(pollable.rep()),
        }
        Ok(pollable)
    }

    fn shutdown(&mut self, this: Resource<TcpSocket>, how: ShutdownType) -> Answer<()> {
        let how = match how {
            ShutdownType::Receive => std::net::Shutdown::Read,
            ShutdownType::Send => std::net::Shutdown::Write,
            ShutdownType::Both => std::net::Shutdown::Both,
        };
        answer(self.table().get(&this)?.shutdown(how))
    }

    fn drop(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<()> {
        // Fails (and traps the guest) if its streams are still alive.
        self.table().delete(this)?;
        Ok(())
    }
}
