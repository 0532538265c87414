//! `wasi:sockets@0.3.0` over the host's version-independent sockets
//! (crate::wasi::sockets): TCP as in WASI 0.2 (the same state machine,
//! grants, caps and policing), with `listen` handing out a stream of
//! clients and `receive` / `send` a stream of bytes each
//! (crate::wasi::p3::streams); UDP sockets and name lookups refused at
//! their entry points, so a guest never holds either.

use super::bindings::{NoUdpSocket, error_code};
use super::streams::{Clients, Incoming, Outgoing};
use crate::wasi::sockets::tcp::{Buffer, Options, TcpSocket, buffer_request};
use crate::wasi::sockets::{Family, SocketError};
use crate::wasi::view::{GuestWasi, WasiHost};
use std::net::SocketAddr;
use wasmtime::component::{
    Access, Accessor, FutureReader, HasSelf, Linker, Resource, StreamReader,
};

use super::bindings::wasi::sockets::ip_name_lookup;
use super::bindings::wasi::sockets::types::{
    self, Duration as WasiDuration, ErrorCode, HostTcpSocket, HostTcpSocketWithStore,
    HostUdpSocket, HostUdpSocketWithStore, IpAddressFamily, IpSocketAddress,
};

/// What a function returns: a trap, or the guest's result.
type Answer<T> = wasmtime::Result<Result<T, ErrorCode>>;

/// Links the host's `wasi:sockets@0.3.0` into `linker`.
pub fn add_to_linker<T: WasiHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    types::add_to_linker::<T, HasSelf<GuestWasi>>(linker, T::wasi)?;
    ip_name_lookup::add_to_linker::<T, HasSelf<GuestWasi>>(linker, T::wasi)?;
    Ok(())
}

/// The guest's result of a socket operation.
fn answer<T, U: From<T>>(result: Result<T, SocketError>) -> Answer<U> {
    Ok(result.map(U::from).map_err(error_code))
}

fn family(family: IpAddressFamily) -> Family {
    match family {
        IpAddressFamily::Ipv4 => Family::Ipv4,
        IpAddressFamily::Ipv6 => Family::Ipv6,
    }
}

/// The socket behind a handle; a handle that is not the guest's traps.
fn socket<'a>(
    wasi: &'a mut GuestWasi,
    this: &Resource<TcpSocket>,
) -> wasmtime::Result<&'a mut TcpSocket> {
    Ok(wasi.table().get_mut(this)?)
}

impl<T: WasiHost> HostTcpSocketWithStore<T> for HasSelf<GuestWasi> {
    async fn connect(
        accessor: &Accessor<T, Self>,
        this: Resource<TcpSocket>,
        remote: IpSocketAddress,
    ) -> Answer<()> {
        let started = accessor.with(|mut access| {
            let wasi = access.get();
            let (grant, cap) = (wasi.grant.clone(), wasi.limits.max_outbound_connections);
            let claims = wasi.claims.clone();
            let started =
                socket(wasi, &this)?.start_connect(SocketAddr::from(remote), &grant, cap, &claims);
            wasmtime::Result::<_>::Ok(started)
        })?;
        if let Err(e) = started {
            return Ok(Err(error_code(e)));
        }
        // The connect is the socket's own future, polled through the
        // table: a cancelled call leaves it with the socket (its descriptor
        // and outbound slot too), which dropping the socket frees.
        std::future::poll_fn(|cx| {
            accessor.with(|mut access| match socket(access.get(), &this) {
                Ok(socket) => socket.poll_connect(cx).map(Ok),
                Err(e) => std::task::Poll::Ready(Err(e)),
            })
        })
        .await?;
        accessor.with(|mut access| {
            let connected = socket(access.get(), &this)?.finish_connect();
            Ok(connected.map(drop).map_err(error_code))
        })
    }

    fn listen(
        mut access: Access<'_, T, Self>,
        this: Resource<TcpSocket>,
    ) -> Answer<StreamReader<Resource<TcpSocket>>> {
        let wasi = access.get();
        let grant = wasi.grant.clone();
        let socket = socket(wasi, &this)?;
        // WASI 0.3 binds an unbound socket implicitly, to an ephemeral
        // port of the wildcard address: never a granted listen address,
        // so the listen is refused (and logged) as the grant's.
        if socket.is_fresh() {
            return Ok(Err(error_code(socket.refuse_unbound_listen())));
        }
        let listening = socket
            .start_listen(&grant)
            .and_then(|()| socket.finish_listen());
        if let Err(e) = listening {
            return Ok(Err(error_code(e)));
        }
        let Some(acceptor) = socket.acceptor() else {
            return Ok(Err(ErrorCode::InvalidState));
        };
        Ok(Ok(StreamReader::new(&mut access, Clients::new(acceptor))?))
    }

    fn send(
        mut access: Access<'_, T, Self>,
        this: Resource<TcpSocket>,
        mut data: StreamReader<u8>,
    ) -> wasmtime::Result<FutureReader<Result<(), ErrorCode>>> {
        let wasi = access.get();
        let (tenant, batch) = (wasi.tenant.clone(), wasi.sends.clone());
        match socket(wasi, &this)?.take_half(true) {
            Ok((stream, policed, hold)) => {
                let (outgoing, done) = Outgoing::new(stream, policed, tenant, hold, batch);
                data.pipe(&mut access, outgoing)?;
                FutureReader::new(&mut access, done)
            }
            Err(e) => {
                data.close(&mut access)?;
                let code = error_code(e);
                FutureReader::new(
                    &mut access,
                    async move { wasmtime::Result::<_>::Ok(Err(code)) },
                )
            }
        }
    }

    fn receive(
        mut access: Access<'_, T, Self>,
        this: Resource<TcpSocket>,
    ) -> wasmtime::Result<(StreamReader<u8>, FutureReader<Result<(), ErrorCode>>)> {
        let wasi = access.get();
        let (sends, reader) = (wasi.sends.clone(), wasi.reads.reader());
        match socket(wasi, &this)?.take_half(false) {
            Ok((stream, policed, hold)) => {
                let (incoming, done) = Incoming::new(stream, policed, hold, sends, reader);
                Ok((
                    StreamReader::new(&mut access, incoming)?,
                    FutureReader::new(&mut access, done)?,
                ))
            }
            Err(e) => {
                let code = error_code(e);
                Ok((
                    StreamReader::new(&mut access, std::iter::empty())?,
                    FutureReader::new(
                        &mut access,
                        async move { wasmtime::Result::<_>::Ok(Err(code)) },
                    )?,
                ))
            }
        }
    }
}

impl GuestWasi {
    /// Stores a socket option that must not be zero (WASI's rule for every
    /// size, count and duration option), as [`TcpSocket::set_option`].
    fn set_nonzero_p3<V: PartialEq + Default>(
        &mut self,
        this: &Resource<TcpSocket>,
        value: V,
        store: impl FnOnce(&mut Options, V),
        apply: fn(&Options, &socket2::SockRef<'_>, Family),
    ) -> Answer<()> {
        if value == V::default() {
            return Ok(Err(ErrorCode::InvalidArgument));
        }
        socket(self, this)?.set_option(|options| store(options, value), apply);
        Ok(Ok(()))
    }

    /// An option's value.
    fn option_p3<V>(&mut self, this: &Resource<TcpSocket>, get: fn(&Options) -> V) -> Answer<V> {
        Ok(Ok(get(&socket(self, this)?.options)))
    }
}

impl types::Host for GuestWasi {}

impl HostTcpSocket for GuestWasi {
    fn create(&mut self, af: IpAddressFamily) -> Answer<Resource<TcpSocket>> {
        let socket = TcpSocket::new(family(af), self.instance.clone(), self.tenant.clone());
        Ok(Ok(self.table().push(socket)?))
    }

    fn bind(&mut self, this: Resource<TcpSocket>, local: IpSocketAddress) -> Answer<()> {
        let (grant, claims) = (self.grant.clone(), self.claims.clone());
        let cap = self.limits.max_outbound_connections;
        let socket = socket(self, &this)?;
        answer(
            socket
                .start_bind(SocketAddr::from(local), &grant, &claims, cap)
                .and_then(|()| socket.finish_bind()),
        )
    }

    fn get_local_address(&mut self, this: Resource<TcpSocket>) -> Answer<IpSocketAddress> {
        answer(socket(self, &this)?.local_address())
    }

    fn get_remote_address(&mut self, this: Resource<TcpSocket>) -> Answer<IpSocketAddress> {
        answer(socket(self, &this)?.remote_address())
    }

    fn get_is_listening(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<bool> {
        Ok(socket(self, &this)?.is_listening())
    }

    fn get_address_family(
        &mut self,
        this: Resource<TcpSocket>,
    ) -> wasmtime::Result<IpAddressFamily> {
        Ok(match socket(self, &this)?.family() {
            Family::Ipv4 => IpAddressFamily::Ipv4,
            Family::Ipv6 => IpAddressFamily::Ipv6,
        })
    }

    fn set_listen_backlog_size(&mut self, this: Resource<TcpSocket>, value: u64) -> Answer<()> {
        answer(socket(self, &this)?.set_listen_backlog_size(value))
    }

    fn get_keep_alive_enabled(&mut self, this: Resource<TcpSocket>) -> Answer<bool> {
        self.option_p3(&this, |o| o.keep_alive)
    }

    fn set_keep_alive_enabled(&mut self, this: Resource<TcpSocket>, value: bool) -> Answer<()> {
        socket(self, &this)?.set_option(|o| o.keep_alive = value, Options::apply_keep_alive);
        Ok(Ok(()))
    }

    fn get_keep_alive_idle_time(&mut self, this: Resource<TcpSocket>) -> Answer<WasiDuration> {
        self.option_p3(&this, |o| o.keep_alive_idle)
    }

    fn set_keep_alive_idle_time(
        &mut self,
        this: Resource<TcpSocket>,
        value: WasiDuration,
    ) -> Answer<()> {
        self.set_nonzero_p3(
            &this,
            value,
            |o, v| o.keep_alive_idle = v,
            Options::apply_keep_alive_params,
        )
    }

    fn get_keep_alive_interval(&mut self, this: Resource<TcpSocket>) -> Answer<WasiDuration> {
        self.option_p3(&this, |o| o.keep_alive_interval)
    }

    fn set_keep_alive_interval(
        &mut self,
        this: Resource<TcpSocket>,
        value: WasiDuration,
    ) -> Answer<()> {
        self.set_nonzero_p3(
            &this,
            value,
            |o, v| o.keep_alive_interval = v,
            Options::apply_keep_alive_params,
        )
    }

    fn get_keep_alive_count(&mut self, this: Resource<TcpSocket>) -> Answer<u32> {
        self.option_p3(&this, |o| o.keep_alive_count)
    }

    fn set_keep_alive_count(&mut self, this: Resource<TcpSocket>, value: u32) -> Answer<()> {
        self.set_nonzero_p3(
            &this,
            value,
            |o, v| o.keep_alive_count = v,
            Options::apply_keep_alive_params,
        )
    }

    fn get_hop_limit(&mut self, this: Resource<TcpSocket>) -> Answer<u8> {
        self.option_p3(&this, |o| o.hop_limit)
    }

    fn set_hop_limit(&mut self, this: Resource<TcpSocket>, value: u8) -> Answer<()> {
        self.set_nonzero_p3(
            &this,
            value,
            |o, v| o.hop_limit = v,
            Options::apply_hop_limit,
        )
    }

    fn get_receive_buffer_size(&mut self, this: Resource<TcpSocket>) -> Answer<u64> {
        Ok(Ok(socket(self, &this)?.buffer_size(Buffer::Receive)))
    }

    fn set_receive_buffer_size(&mut self, this: Resource<TcpSocket>, value: u64) -> Answer<()> {
        let size = buffer_request(value);
        self.set_nonzero_p3(
            &this,
            size,
            |o, v| o.receive_buffer = Some(v),
            Options::apply_buffers,
        )
    }

    fn get_send_buffer_size(&mut self, this: Resource<TcpSocket>) -> Answer<u64> {
        Ok(Ok(socket(self, &this)?.buffer_size(Buffer::Send)))
    }

    fn set_send_buffer_size(&mut self, this: Resource<TcpSocket>, value: u64) -> Answer<()> {
        let size = buffer_request(value);
        self.set_nonzero_p3(
            &this,
            size,
            |o, v| o.send_buffer = Some(v),
            Options::apply_buffers,
        )
    }

    fn drop(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<()> {
        // Its streams, if any, live on and hold the connection (Hold).
        self.table().delete(this)?;
        Ok(())
    }
}

/// Every UDP method but `create`: unreachable, as no UDP socket exists.
fn no_udp<R>(this: &Resource<NoUdpSocket>) -> wasmtime::Result<R> {
    wasmtime::bail!("UDP socket {} does not exist", this.rep())
}

impl<T: WasiHost> HostUdpSocketWithStore<T> for HasSelf<GuestWasi> {
    async fn send(
        _: &Accessor<T, Self>,
        this: Resource<NoUdpSocket>,
        _: Vec<u8>,
        _: Option<IpSocketAddress>,
    ) -> Answer<()> {
        no_udp(&this)
    }

    async fn receive(
        _: &Accessor<T, Self>,
        this: Resource<NoUdpSocket>,
    ) -> Answer<(Vec<u8>, IpSocketAddress)> {
        no_udp(&this)
    }
}

impl HostUdpSocket for GuestWasi {
    fn create(&mut self, _: IpAddressFamily) -> Answer<Resource<NoUdpSocket>> {
        crate::wasi::deny::udp(self.tenant.account());
        Ok(Err(ErrorCode::AccessDenied))
    }

    fn bind(&mut self, this: Resource<NoUdpSocket>, _: IpSocketAddress) -> Answer<()> {
        no_udp(&this)
    }

    fn connect(&mut self, this: Resource<NoUdpSocket>, _: IpSocketAddress) -> Answer<()> {
        no_udp(&this)
    }

    fn disconnect(&mut self, this: Resource<NoUdpSocket>) -> Answer<()> {
        no_udp(&this)
    }

    fn get_local_address(&mut self, this: Resource<NoUdpSocket>) -> Answer<IpSocketAddress> {
        no_udp(&this)
    }

    fn get_remote_address(&mut self, this: Resource<NoUdpSocket>) -> Answer<IpSocketAddress> {
        no_udp(&this)
    }

    fn get_address_family(
        &mut self,
        this: Resource<NoUdpSocket>,
    ) -> wasmtime::Result<IpAddressFamily> {
        no_udp(&this)
    }

    fn get_unicast_hop_limit(&mut self, this: Resource<NoUdpSocket>) -> Answer<u8> {
        no_udp(&this)
    }

    fn set_unicast_hop_limit(&mut self, this: Resource<NoUdpSocket>, _: u8) -> Answer<()> {
        no_udp(&this)
    }

    fn get_receive_buffer_size(&mut self, this: Resource<NoUdpSocket>) -> Answer<u64> {
        no_udp(&this)
    }

    fn set_receive_buffer_size(&mut self, this: Resource<NoUdpSocket>, _: u64) -> Answer<()> {
        no_udp(&this)
    }

    fn get_send_buffer_size(&mut self, this: Resource<NoUdpSocket>) -> Answer<u64> {
        no_udp(&this)
    }

    fn set_send_buffer_size(&mut self, this: Resource<NoUdpSocket>, _: u64) -> Answer<()> {
        no_udp(&this)
    }

    fn drop(&mut self, this: Resource<NoUdpSocket>) -> wasmtime::Result<()> {
        no_udp(&this)
    }
}

impl<T: WasiHost> ip_name_lookup::HostWithStore<T> for HasSelf<GuestWasi> {
    async fn resolve_addresses(
        accessor: &Accessor<T, Self>,
        name: String,
    ) -> wasmtime::Result<Result<Vec<types::IpAddress>, ip_name_lookup::ErrorCode>> {
        accessor.with(|mut access| {
            crate::wasi::deny::name_lookup(access.get().tenant.account(), &name)
        });
        Ok(Err(ip_name_lookup::ErrorCode::AccessDenied))
    }
}

impl ip_name_lookup::Host for GuestWasi {}
